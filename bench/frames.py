"""Accuracy end to end: faces classified as given vs through the app's path, and against `fer`.

    python bench/frames.py [--model DIR] [--data ../shared/data/fer2013.zip] [--split validation]
                           [--limit N] [--seed 0] [--with-fer] [--keep DIR | --frames DIR]
                           [--geometry SCALE SHIFT_X SHIFT_Y] [--align on|off] [--json OUT]

The faces of a split (default FER2013 PublicTest, all 3,589) are each placed into a 640x480 frame
(`emotion_vit.frames`: random size and position, replicated / blurred / mosaic background) and
written as JPEG (quality 95) to a labelled photo folder, <label>/<n>.jpg. Then, on exactly those
files:
  direct    our model on the faces as given (no detector), flip TTA as the app serves it;
  app       `train.py evaluate-frames`' path: `EmotionService.analyze` as the app answers a photo
            (detector, fitted crop geometry, preprocessing, flip TTA), the largest face;
  fer       the peer package `fer` 25.10.3 (Haar + its CNN) in its own venv (bench/fer_env.sh),
            its own `detect_emotions`, the largest face (--with-fer).
A frame whose face is not found counts as wrong for both. The folder can be kept (--keep) and
scored again with `python train.py evaluate-frames --data DIR`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from machine import machine_line
from paths import REPO, add_data_arguments

from emotion_vit.crop import CropGeometry
from emotion_vit.frame_evaluation import evaluate_frames, photo_folder_frames, split_faces
from emotion_vit.frames import FrameOptions, placed_faces
from emotion_vit.metrics import EmotionMetrics
from emotion_vit.service import DEFAULT_MODEL, AppSettings, EmotionService

FER_PYTHON = REPO / "bench" / ".venv-fer" / "bin" / "python"


def write_frames(data: str, split: str, limit: int | None, seed: int, folder: Path | None) -> list[np.ndarray]:
    """Place the split's faces into frames and write them as <label>/<n>.jpg (unless `folder` is None, for
    frames written before); returns the faces."""
    faces, labels = split_faces(data, split, limit, seed)
    if folder is not None:
        for index, placed in enumerate(placed_faces(faces, FrameOptions(seed=seed))):
            path = folder / labels[index] / f"{index:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), cv2.cvtColor(placed.frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return faces


def scores(predictions: list[int], references: list[int], labels: list[str]) -> dict:
    results = EmotionMetrics(labels=labels).compute(predictions=predictions, references=references)
    return {"accuracy": results["accuracy"], "macro_f1": results["macro_f1"], "recall": results["recall"],
            "missed": sum(p < 0 for p in predictions)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    add_data_arguments(parser)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--with-fer", action="store_true")
    parser.add_argument("--fer-python", default=str(FER_PYTHON))
    parser.add_argument("--geometry", nargs=3, type=float, metavar=("SCALE", "SHIFT_X", "SHIFT_Y"),
                        help="Cut crops with this CropGeometry instead of the fitted one (ablation; the old "
                             "15%% margin is about 1.477 0 0 for RetinaFace's boxes).")
    parser.add_argument("--crop-spread", type=float,
                        help="The app's photo_crop_spread (default: the app's; 0: one crop per face).")
    parser.add_argument("--bf16", choices=["auto", "on", "off"], help="The app's bf16 (default: the app's).")
    parser.add_argument("--align", choices=["on", "off"], help="Align faces by the eyes (default: the app's).")
    parser.add_argument("--frames", help="Score this folder of <label>/<n>.jpg frames written by an earlier --keep "
                                         "instead of writing new ones (same --data, --split, --limit, --seed).")
    parser.add_argument("--keep", help="Write the frames here and keep them (default: a temporary folder).")
    parser.add_argument("--json", help="Write the figures here.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(args.frames or args.keep or temporary)
        faces = write_frames(args.data, args.split, args.limit, args.seed, None if args.frames else folder)
        geometry = CropGeometry(*args.geometry) if args.geometry else CropGeometry()
        settings = AppSettings(model=args.model, geometry=geometry)
        if args.crop_spread is not None:
            settings.photo_crop_spread = args.crop_spread
        if args.bf16 is not None:
            settings.bf16 = args.bf16
        if args.align is not None:
            settings.align = args.align == "on"
        service = EmotionService(settings)
        labels = service.model.labels
        # Direct: the faces as given, in the order of the folder's files (label folders, then index).
        frames = photo_folder_frames(folder)
        order = [int(Path(frame.name).stem) for frame in frames]
        references = [labels.index(frame.label) for frame in frames]
        direct = np.concatenate([service.model.predict_proba([faces[i] for i in order[start:start + 256]]).argmax(-1)
                                 .numpy() for start in range(0, len(order), 256)]).tolist()
        start = time.perf_counter()
        app = evaluate_frames(service, frames, total=len(frames), description=f"{args.split} in frames")
        app_seconds = time.perf_counter() - start
        found = [i for i, answer in enumerate(app["predictions"]) if answer["prediction"] is not None]
        figures = {"frames": len(frames), "data": Path(args.data).name, "split": args.split, "seed": args.seed,
                   "model": Path(args.model).name, "machine": machine_line(), "geometry": vars(geometry),
                   "crop_spread": service.settings.photo_crop_spread, "bf16": service.model.bf16,
                   "align": service.settings.align,
                   "direct": scores(direct, references, labels),
                   "direct_on_found": scores([direct[i] for i in found], [references[i] for i in found], labels),
                   "app_on_found": scores([labels.index(app["predictions"][i]["prediction"]) for i in found],
                                          [references[i] for i in found], labels),
                   "app": {"accuracy": app["accuracy"], "macro_f1": app["macro_f1"], "recall": app["recall"],
                           "missed": app["faces_missed"], "seconds": round(app_seconds, 1)}}
        if args.with_fer:
            start = time.perf_counter()
            output = subprocess.run([args.fer_python, str(REPO / "bench" / "fer_classify.py"), str(folder)],
                                    check=True, capture_output=True, text=True).stdout
            answers = json.loads(output)
            predicted = [answers["answers"][frame.name] for frame in frames]
            figures["fer"] = {**scores([labels.index(p) if p else -1 for p in predicted], references, labels),
                              "seconds": round(time.perf_counter() - start, 1), "versions": answers["versions"]}

    print(f"machine: {figures['machine']}")
    print(f"{figures['frames']} {args.split} faces of {figures['data']} in 640x480 frames (seed {args.seed}), "
          f"model {figures['model']}, {geometry}, crop spread {service.settings.photo_crop_spread}, "
          f"bf16 {service.model.bf16}, align {service.settings.align}")
    print("| path | accuracy | macro-F1 | faces missed | " + " | ".join(labels) + " |")
    print("|---|---|---|---|" + "---|" * len(labels))
    for name in ("direct", "app", "fer", "direct_on_found", "app_on_found"):
        if name in figures:
            row = figures[name]
            print(f"| {name} | {row['accuracy']:.2%} | {row['macro_f1']:.3f} | {row['missed']} | "
                  + " | ".join(f"{row['recall'][label]:.1%}" for label in labels) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
