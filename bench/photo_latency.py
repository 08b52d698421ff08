"""What one photo costs through the app's photo path (the Photo tab and /analyze), one crop per face vs
a tighter and a looser crop too (`AppSettings.photo_crop_spread`), classified in float32 or bfloat16
(`AppSettings.bf16`).

    python bench/photo_latency.py [--runs 7] [--spreads 0 0.1] [--bf16 off on]

For the astronaut (1 face) and, where ../shared/images is present, the 1927 Solvay photo (29 faces):
detector, classifier and end-to-end milliseconds, medians after one warm-up call.
"""

from __future__ import annotations

import argparse

import numpy as np
from machine import machine_line
from paths import REPO, SHARED
from PIL import Image

from emotion_vit.service import AppSettings, EmotionService

PHOTOS = [REPO / "tests" / "assets" / "astronaut.jpg", SHARED / "images" / "solvay1927.png"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--spreads", type=float, nargs="+", default=[0.0, 0.1])
    parser.add_argument("--bf16", nargs="+", choices=["auto", "on", "off"], default=["off"])
    args = parser.parse_args()
    print(f"machine: {machine_line()}")
    print("| photo | faces | crop spread | bf16 | detect ms | classify ms | end to end ms |")
    print("|---|---|---|---|---|---|---|")
    services = {(spread, bf16): EmotionService(AppSettings(photo_crop_spread=spread, bf16=bf16))
                for spread in args.spreads for bf16 in args.bf16}
    for path in (p for p in PHOTOS if p.is_file()):
        image = np.asarray(Image.open(path).convert("RGB"))
        for service in services.values():
            service.analyze(image)  # warm-up
        runs = {setting: [] for setting in services}
        for _ in range(args.runs):  # interleaved: load drifts hit every setting alike
            for setting, service in services.items():
                runs[setting].append(service.analyze(image))
        for (spread, bf16), results in runs.items():
            detect, classify, total = (np.median([run.timings_ms[key] for run in results])
                                       for key in ("detect", "classify", "total"))
            print(f"| {path.name} | {len(results[0].faces)} | {spread} | {bf16} | {detect:.0f} | {classify:.0f} | "
                  f"{total:.0f} |")


if __name__ == "__main__":
    main()
