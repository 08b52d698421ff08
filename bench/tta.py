"""Test-time augmentation: what one view, flip and ten-crop buy in accuracy, and what they cost.

    python bench/tta.py [--model models/emotion-vit-fer2013] [--data ../shared/data/fer2013.zip]
                        [--split validation] [--zoom 1.125] [--json OUT]

On every face of the split (default FER2013 PublicTest, 3,589), the model's probabilities averaged over:
  one view   the face as the model was trained to see it;
  flip       the face and its mirror image (the app's default);
  ten-crop   the face enlarged by --zoom, its centre and four corner crops at the model's size, each
             also mirrored (the classic FER2013 recipe; shifts of 6% stay inside the training jitter).
Accuracy and macro-F1 for each; then the classifier's time per call for 1 and 29 faces (the one-face
and the group-photo rows of bench/latency.py) with each, median of repeated calls, on this machine
as it is (the load is printed: compare rows of one run, not across machines).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from machine import machine_line
from paths import add_data_arguments

from emotion_vit.data import load_emotion_dataset
from emotion_vit.labels import canonical_label
from emotion_vit.metrics import EmotionMetrics
from emotion_vit.model import EmotionModel, load_emotion_model
from emotion_vit.service import DEFAULT_MODEL
from emotion_vit.transforms import image_array


def ten_crop_views(model: EmotionModel, faces: list[np.ndarray], zoom: float) -> torch.Tensor:
    """(10, N, 3, S, S): each face enlarged by `zoom`, its centre and four corner crops, each also mirrored."""
    prep = model.preprocessing
    size = prep.size
    big = round(size * zoom)
    enlarged = [cv2.resize(prep.resize(prep.gray(face)), (big, big), interpolation=cv2.INTER_LINEAR)
                for face in faces]
    offsets = [((big - size) // 2, (big - size) // 2), (0, 0), (0, big - size), (big - size, 0),
               (big - size, big - size)]
    crops = [prep.normalize([face[y:y + size, x:x + size] for face in enlarged]) for y, x in offsets]
    return torch.stack([*crops, *(crop.flip(-1) for crop in crops)])


@torch.inference_mode()
def probabilities(model: EmotionModel, faces: list[np.ndarray], mode: str, zoom: float) -> torch.Tensor:
    """One view and flip go through the model's own served path (`predict_proba`); ten-crop, every view
    in one forward."""
    if mode in ("one", "flip"):
        return dataclasses.replace(model, flip_tta=mode == "flip").predict_proba(faces)
    batch = ten_crop_views(model, faces, zoom)
    count, n = batch.shape[:2]
    logits = model.model(pixel_values=batch.flatten(0, 1)).logits.float()
    return logits.softmax(-1).view(count, n, -1).mean(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    add_data_arguments(parser)
    parser.add_argument("--zoom", type=float, default=1.125)
    parser.add_argument("--json", help="Also write the figures here.")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    model = load_emotion_model(args.model)
    subset = load_emotion_dataset(args.data)[args.split]
    names = subset.features["label"].names
    to_model = np.array([model.labels.index(canonical_label(name)) for name in names])
    modes = ["one", "flip", "ten"]
    metrics = {mode: EmotionMetrics(labels=model.labels) for mode in modes}
    for start in range(0, len(subset), 256):
        rows = subset[start:start + 256]
        faces = [image_array(image) for image in rows["image"]]
        references = to_model[np.asarray(rows["label"])]
        for mode in modes:
            predictions = probabilities(model, faces, mode, args.zoom).argmax(-1).numpy()
            metrics[mode].add_batch(predictions=predictions, references=references)
    results = {mode: metrics[mode].compute() for mode in modes}
    faces = [image_array(image) for image in subset[:29]["image"]]
    for mode in modes:
        for n in (1, 29):
            times = []
            for _ in range(30):
                started = time.perf_counter()
                probabilities(model, faces[:n], mode, args.zoom)
                times.append((time.perf_counter() - started) * 1000)
            results[mode][f"classify_ms_{n}_faces"] = round(statistics.median(times), 2)
    print(f"{'views':<10} {'accuracy':>9} {'macro-F1':>9} {'ms, 1 face':>11} {'ms, 29 faces':>13}")
    for mode in modes:
        row = results[mode]
        print(f"{mode:<10} {row['accuracy']:>9.2%} {row['macro_f1']:>9.3f} {row['classify_ms_1_faces']:>11.1f} "
              f"{row['classify_ms_29_faces']:>13.1f}")
    print(f"({len(subset)} faces of {args.split}; ten-crop zoom {args.zoom}; load average after: "
          f"{os.getloadavg()[0]:.2f})")
    if args.json:
        keep = ["accuracy", "macro_f1", "recall", "classify_ms_1_faces", "classify_ms_29_faces"]
        Path(args.json).write_text(json.dumps({m: {k: results[m][k] for k in keep if k in results[m]}
                                               for m in modes}, indent=1))


if __name__ == "__main__":
    main()
