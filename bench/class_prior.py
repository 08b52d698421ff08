"""Class weighting vs none, measured after the fact: undo the loss weights' prior shift and score again.

    python bench/class_prior.py [--model models/emotion-vit-fer2013] [--data ../shared/data/fer2013.zip]
                                [--split validation] [--weighting sqrt_inverse] [--strengths 0 0.5 1]

Cross-entropy weighted by w_c trains the model towards p(c | x) * w_c (up to a constant): the weights
shift every logit by log w_c. Adding back -strength * log w_c (strength 1 undoes the weighting
exactly, in the limit of a perfectly fitted model) scores what the same network would do under the
plain training prior, without training it again; the recipe's sqrt_inverse weighting gives
log w_c = -0.5 log freq_c. One view per face; accuracy, macro-F1 and recall per class for each strength.
The shift is a bias on the classifier, so a strength worth shipping folds into the checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch
from machine import machine_line
from paths import add_data_arguments

from emotion_vit.data import load_emotion_dataset
from emotion_vit.labels import canonical_label
from emotion_vit.metrics import EmotionMetrics, flat_metrics
from emotion_vit.model import load_emotion_model
from emotion_vit.service import DEFAULT_MODEL
from emotion_vit.trainer import class_weights
from emotion_vit.transforms import image_array


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    add_data_arguments(parser)
    parser.add_argument("--weighting", default="sqrt_inverse", choices=["sqrt_inverse", "inverse"],
                        help="The weighting the model was trained with (its recipe's class_weighting).")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    args = parser.parse_args()
    print(machine_line(), flush=True)

    model = dataclasses.replace(load_emotion_model(args.model), flip_tta=False)
    dataset = load_emotion_dataset(args.data)
    names = dataset["train"].features["label"].names
    to_model = np.array([model.labels.index(canonical_label(name)) for name in names])
    train_labels = to_model[np.asarray(dataset["train"]["label"])].tolist()
    log_weights = class_weights(train_labels, len(model.labels), args.weighting).log()

    subset = dataset[args.split].with_format(None)
    references = to_model[np.asarray(subset["label"])]
    log_probs = []
    for start in range(0, len(subset), 256):
        faces = [image_array(image) for image in subset[start:start + 256]["image"]]
        log_probs.append(model.predict_proba(faces).clamp_min(1e-12).log())
    log_probs = torch.cat(log_probs)

    print(f"{args.model} on {args.split} ({len(subset)} faces), one view; {args.weighting} log-weights:",
          " ".join(f"{label} {w:+.2f}" for label, w in zip(model.labels, log_weights.tolist())))
    print("| strength of the undo | accuracy | macro-F1 | " + " | ".join(model.labels) + " |")
    print("|---" * (3 + len(model.labels)) + "|")
    for strength in args.strengths:
        metric = EmotionMetrics(labels=model.labels)
        metric.add_batch(predictions=(log_probs - strength * log_weights).argmax(-1).numpy(), references=references)
        results = metric.compute()
        flat = flat_metrics(results)
        recalls = " | ".join(f"{results['recall'][label]:.1%}" for label in model.labels)
        print(f"| {strength:g} | {flat['accuracy']:.2%} | {flat['macro_f1']:.3f} | {recalls} |", flush=True)


if __name__ == "__main__":
    main()
