"""Tilted heads through the app: eye alignment off, levelling every face, or only the tilt beyond a kept one.

    python bench/tilt.py [--limit 1000] [--max-tilt 25] [--kept-tilt 0 6 12] [--seed 0]

PublicTest faces in frames (`emotion_vit.frames`, as bench/frames.py), each frame upright and again
rotated about its face by a seeded random angle within +-max-tilt degrees (a student's head on a
hand). Each goes through `EmotionService.analyze` as the app answers a photo; the face scored is the
detected one on the placed square (`match="box"`), so a false box elsewhere does not count. Rows:
alignment off, and on with `emotion_vit.crop.KEPT_TILT_DEGREES` set to each --kept-tilt (0: the eyes
levelled exactly).
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
from machine import machine_line
from paths import FER2013

from emotion_vit import crop
from emotion_vit.frame_evaluation import LabelledFrame, evaluate_frames, placed_frames
from emotion_vit.frames import FrameOptions
from emotion_vit.service import AppSettings, EmotionService


def tilted_frames(data: str, limit: int, max_tilt: float, seed: int) -> list[LabelledFrame]:
    _, frames = placed_frames(data, "validation", FrameOptions(seed=seed), limit=limit)
    rng = np.random.default_rng(seed + 7)
    tilted = []
    for item in frames:
        x1, y1, x2, y2 = item.box
        matrix = cv2.getRotationMatrix2D(((x1 + x2) / 2, (y1 + y2) / 2), float(rng.uniform(-max_tilt, max_tilt)), 1.0)
        frame = cv2.warpAffine(item.frame, matrix, item.frame.shape[1::-1], borderMode=cv2.BORDER_REFLECT_101)
        tilted.append(LabelledFrame(frame, item.label, item.name, item.box))  # same centre: the box still matches
    return tilted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(FER2013))
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--max-tilt", type=float, default=25.0)
    parser.add_argument("--kept-tilt", type=float, nargs="+", default=[0.0, crop.KEPT_TILT_DEGREES, 12.0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(machine_line(), flush=True)
    service = EmotionService(AppSettings())
    rows = [("alignment off", False, None)] + [(f"aligned, tilt up to {kept:g} degrees kept", True, kept)
                                                 for kept in args.kept_tilt]
    print(f"| {args.limit} PublicTest faces in frames | upright | tilted up to +-{args.max_tilt:g} degrees |")
    print("|---|---|---|")
    results = {name: [] for name, _, _ in rows}
    for max_tilt in (0.0, args.max_tilt):
        frames = tilted_frames(args.data, args.limit, max_tilt, args.seed)
        for name, align, kept in rows:
            if kept is not None:
                crop.KEPT_TILT_DEGREES = kept  # read by CropGeometry.crop at each call
            service.settings.align = align
            scored = evaluate_frames(service, frames, match="box", total=len(frames))
            results[name].append(f"{scored['accuracy']:.2%} ({scored['faces_missed']} missed)")
    for name, cells in results.items():
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
