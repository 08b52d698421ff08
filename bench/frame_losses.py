"""Where accuracy goes between a face as given and the same face through the app: frame, crop, resolution.

    python bench/frame_losses.py [--model DIR] [--data ../shared/data/fer2013.zip] [--split validation]
                                 [--seed 0] [--limit N] [--scales 0.95 1.0 1.05 1.112]

Each face of the split is placed into a 640x480 frame (`emotion_vit.frames`, as bench/frames.py)
and round-tripped through JPEG (quality 95). On the faces RetinaFace finds (the box overlapping
the pasted square by IoU >= 0.3), with flip TTA as the app serves, it scores:
  direct          the 48x48 face as given;
  exact square    the pasted square cut from the frame (FER2013's own framing, at frame resolution);
  detector crop   the crop `CropGeometry(scale=S)` cuts from the detector's box, for each S;
each crop resized straight to the model's input and reduced to the training faces' resolution
first (`Preprocessing.face_resolution`, 48 for FER2013). The exact square isolates what the frame
and its resolution cost; the detector crop adds what the detector's framing costs.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import cv2
import numpy as np
from machine import machine_line
from paths import add_data_arguments

from emotion_vit.crop import CropGeometry, find_faces
from emotion_vit.detect import create_detector
from emotion_vit.frame_evaluation import split_faces
from emotion_vit.frames import FrameOptions, placed_faces
from emotion_vit.model import load_emotion_model
from emotion_vit.service import DEFAULT_MODEL
from emotion_vit.track import iou


def jpeg_round_trip(frame: np.ndarray) -> np.ndarray:
    _, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    add_data_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="Frame placement seed.")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.95, 1.0, 1.05, 1.112])
    args = parser.parse_args()

    model = dataclasses.replace(load_emotion_model(args.model), flip_tta=True)
    resolution = model.preprocessing.face_resolution or 48
    variants = {"reduced": dataclasses.replace(model.preprocessing, face_resolution=resolution),
                "straight": dataclasses.replace(model.preprocessing, face_resolution=None)}
    faces, labels = split_faces(args.data, args.split, args.limit, 0)
    truth = np.array([model.labels.index(label) for label in labels])
    detector = create_detector("retinaface")
    names = ["direct", "exact square", *(f"detector crop, scale {scale}" for scale in args.scales)]
    predicted: dict[str, list[np.ndarray]] = {name: [] for name in variants}
    found = []
    for face, placed in zip(faces, placed_faces(faces, FrameOptions(seed=args.seed))):
        frame = jpeg_round_trip(placed.frame)
        best = max(find_faces(detector, frame), key=lambda f: iou(f.box, placed.box), default=None)
        found.append(best is not None and iou(best.box, placed.box) >= 0.3)
        if not found[-1]:
            continue
        x1, y1, x2, y2 = map(int, placed.box)
        crops = [face, frame[y1:y2, x1:x2],
                 *(CropGeometry(scale=scale).face_crop(frame, best) for scale in args.scales)]
        for variant, preprocessing in variants.items():  # every crop of this face, one forward per variant
            scored = dataclasses.replace(model, preprocessing=preprocessing)
            predicted[variant].append(scored.predict_proba(crops).argmax(-1).numpy())
    truth = truth[np.array(found)]
    accuracy = {variant: (np.stack(rows) == truth[:, None]).mean(0) for variant, rows in predicted.items()}

    print(f"machine: {machine_line()}")
    print(f"{len(faces)} {args.split} faces of {Path(args.data).name} in frames (seed {args.seed}), "
          f"{len(truth)} found by RetinaFace; model {Path(args.model).name}, flip TTA; accuracy on the found faces")
    print(f"| crop | resized straight to {model.preprocessing.size} px | reduced to {resolution} px first |")
    print("|---|---|---|")
    for index, name in enumerate(names):
        print(f"| {name} | {accuracy['straight'][index]:.2%} | {accuracy['reduced'][index]:.2%} |")

if __name__ == "__main__":
    main()
