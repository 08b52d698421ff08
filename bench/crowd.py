"""What a crafted crowd costs the shared server: a mosaic of one face, tiled into a 1920x1920 photo, through
the app's photo path (the Photo tab and /analyze), with the server's face cap (`--max-faces`) and without.

    python bench/crowd.py [--tile 64] [--max-faces 200 0]      # 0: no cap

Prints the faces classified and left out, the detector's and classifier's milliseconds and how much the
process's peak memory grew, one fresh process per setting (peak memory only grows).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import numpy as np
from machine import machine_line
from paths import REPO
from PIL import Image

FACE = REPO / "tests" / "assets" / "astronaut.jpg"
FACE_BOX = (150, 30, 300, 200)  # the astronaut's face and a margin, in the photo's pixels
SIDE = 1920  # the photo path's detection size (AppSettings.photo_max_side)


def measure(tile: int, max_faces: int) -> dict:
    from emotion_vit.pipeline import set_inference_threads
    from emotion_vit.service import AppSettings, EmotionService
    set_inference_threads()
    service = EmotionService(AppSettings(max_faces=max_faces))
    face = np.asarray(Image.open(FACE).convert("RGB").crop(FACE_BOX).resize((tile, tile)))
    mosaic = np.tile(face, (SIDE // tile, SIDE // tile, 1))
    service.analyze(face)  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    analysis = service.analyze(mosaic)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # ru_maxrss: KiB on Linux
    return {"tiles": (SIDE // tile) ** 2, "classified": len(analysis.faces), "left_out": analysis.faces_not_classified,
            **analysis.timings_ms, "peak_growth_mb": round(grown_mb)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tile", type=int, default=64, help="each face's side in the mosaic, pixels")
    parser.add_argument("--max-faces", type=int, nargs="+", default=[200, 0])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process: measure this cap, print JSON
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.tile, args.one)))
        return
    print(f"machine: {machine_line()}")
    print("| faces in the mosaic | --max-faces | classified | left out | detect ms | classify ms | total ms "
          "| peak memory growth |\n|---|---|---|---|---|---|---|---|")
    for cap in args.max_faces:
        child = subprocess.run([sys.executable, __file__, "--tile", str(args.tile), "--one", str(cap)],
                               capture_output=True, text=True, check=True)
        row = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"| {row['tiles']} | {cap or 'none'} | {row['classified']} | {row['left_out']} | {row['detect']:.0f} "
              f"| {row['classify']:.0f} | {row['total']:.0f} | {row['peak_growth_mb']} MB |", flush=True)


if __name__ == "__main__":
    main()
