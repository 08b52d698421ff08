"""What an ensemble of trained models would give: the mean of their probabilities, on a split.

    python bench/ensemble.py --models models/emotion-vit-fer2013 runs/fer2013-pvt-long-mim [MORE ...]
                             [--data ../shared/data/fer2013.zip] [--split validation] [--json OUT]

Each model alone, then every combination of two or more, one view and flip TTA (float32). The mean of
several runs' probabilities is the teacher the backbone issue's distillation lever would learn from
(`--teacher_model`), so the best row bounds what distilling it can give; "both wrong" is the share of
faces two models both get wrong, which is what decides whether they are worth averaging: runs that err on
the same faces add nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
from pathlib import Path

import torch
from machine import machine_info, machine_line
from paths import add_data_arguments
from rooms import probabilities

from emotion_vit.data import load_emotion_dataset
from emotion_vit.labels import canonical_label
from emotion_vit.model import load_emotion_model
from emotion_vit.pipeline import set_inference_threads
from emotion_vit.transforms import image_array


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, help="Model folders with the same labels.")
    add_data_arguments(parser)
    parser.add_argument("--json", help="Also write the rows here.")
    args = parser.parse_args()
    set_inference_threads()
    print(f"machine: {machine_line()}", flush=True)
    subset = load_emotion_dataset(args.data)[args.split].with_format(None)
    faces = [image_array(image) for image in subset["image"]]
    models = [load_emotion_model(name) for name in args.models]
    labels = models[0].labels
    if any(model.labels != labels for model in models):
        raise SystemExit("the models' labels differ: " + "; ".join(f"{m.name}: {m.labels}" for m in models))
    names = subset.features["label"].names
    truth = torch.as_tensor([labels.index(canonical_label(names[label])) for label in subset["label"]])
    answers = {flip: [probabilities(dataclasses.replace(model, flip_tta=flip), faces) for model in models]
                     for flip in (False, True)}
    rows = []
    print("| models averaged | one view | flip TTA |\n|---|---|---|")
    for size in range(1, len(models) + 1):
        for members in itertools.combinations(range(len(models)), size):
            accuracy = {flip: float((torch.stack([answers[flip][i] for i in members]).mean(0).argmax(-1)
                                     == truth).float().mean()) for flip in (False, True)}
            rows.append({"models": [args.models[i] for i in members], "one_view": accuracy[False],
                         "flip_tta": accuracy[True]})
            print(f"| {' + '.join(args.models[i] for i in members)} | {accuracy[False]:.2%} | "
                  f"{accuracy[True]:.2%} |", flush=True)
    wrong = [(answers[False][i].argmax(-1) != truth).float() for i in range(len(models))]
    print("\n| pair, one view | first wrong | second wrong | both wrong |\n|---|---|---|---|")
    for first, second in itertools.combinations(range(len(models)), 2):
        shares = [float(share.mean()) for share in (wrong[first], wrong[second], wrong[first] * wrong[second])]
        print(f"| {args.models[first]} / {args.models[second]} | " + " | ".join(f"{s:.2%}" for s in shares) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_info(), "args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
