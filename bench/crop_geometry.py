"""Fit the crop geometry: where a detector's box puts FER2013's framing, measured label-free.

    python bench/crop_geometry.py [--data ../shared/data/fer2013.zip] [--faces 2000] [--detector retinaface]
                                  [--output configs/crop-geometry-retinaface.json]

Training faces (no labels used) are placed into 640x480 frames (`emotion_vit.frames`: random size
112-272 px, replicated / blurred / mosaic backgrounds); the detector runs on each frame; its box
that overlaps the pasted square most is compared with that square. The medians of three per-face
ratios are the geometry (`emotion_vit.crop.CropGeometry`: side / box size, centre shift in box
sizes, box size = sqrt(w * h)); their spread is the detector's jitter against the data set's
framing. The output JSON keeps the fit and every face's ratios: training can re-frame faces with
exactly that jitter (`detector_framing` in a recipe).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from machine import machine_line
from paths import add_data_arguments

from emotion_vit.crop import CropGeometry, fit_geometry
from emotion_vit.data import load_emotion_dataset
from emotion_vit.detect import DETECTOR_BACKENDS, DetectorOptions, create_detector
from emotion_vit.frames import FrameOptions, detected_boxes, placed_faces
from emotion_vit.transforms import image_array


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_arguments(parser, split="train")
    parser.add_argument("--faces", type=int, default=2000, help="Faces sampled from the split (seeded).")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--detector", choices=DETECTOR_BACKENDS, default="retinaface")
    parser.add_argument("--yunet-model", help="Local YuNet ONNX file.")
    parser.add_argument("--output", help="Write the fit and every face's ratios here (JSON).")
    args = parser.parse_args()

    split = load_emotion_dataset(args.data)[args.split]
    split = split.shuffle(seed=args.seed).select(range(min(args.faces, len(split))))
    faces = [image_array(image) for image in split["image"]]
    detector = create_detector(args.detector, model_path=args.yunet_model)
    start = time.perf_counter()
    boxes, squares, missed = detected_boxes(detector, placed_faces(faces, FrameOptions(seed=args.seed)),
                                            DetectorOptions())
    seconds = time.perf_counter() - start
    fit = fit_geometry(boxes, squares)

    print(f"machine: {machine_line()}")
    print(f"{args.detector} on {len(faces)} {args.split} faces of {args.data} in frames: "
          f"{len(boxes)} matched, {missed} missed, {seconds:.0f} s")
    print(f"fitted: {fit.geometry}   (in use: {CropGeometry()})")
    print("per-face spread, percentiles 10 / 25 / 50 / 75 / 90:")
    for name in ("scale", "shift_x", "shift_y"):
        print(f"  {name:<8} {' / '.join(f'{v:.3f}' for v in getattr(fit, f'{name}_percentiles'))}")
    if args.output:
        record = {"detector": args.detector, "data": Path(args.data).name, "split": args.split, "seed": args.seed,
                  "command": "python bench/crop_geometry.py " + " ".join(sys.argv[1:]),
                  "missed": missed, **fit.to_dict(),
                  "samples_are": "per face: scale, shift_x, shift_y", "samples": np.round(fit.samples, 4).tolist()}
        Path(args.output).write_text(json.dumps(record) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
