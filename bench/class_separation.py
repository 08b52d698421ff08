"""How far a model's features have collapsed onto its classes: the class separation R^2 of Kornblith et al.
("Why do better loss functions lead to less transferable features?", NeurIPS 2021), read from the feature
banks that ship with each model (feature_stats.safetensors).

    python bench/class_separation.py --models models/emotion-vit-fer2013 runs/heldout-60-pairs

R^2 = 1 - (mean cosine distance between two faces of one class) / (mean cosine distance between any two
faces), classes weighted equally: 0 when the classes are indistinguishable, 1 when each class is a point.
Kornblith et al. found that what raises it (label smoothing, long training, other losses) raises accuracy
on the training task and lowers what a frozen feature extractor carries for a new one: the few-shot
issue's new expressions. Printed for the training bank (faces the model fitted) and, where the file has
one, the unseen bank (validation faces; `train.py feature-stats` adds it to an older model), on the classes
every model given has (a held-out-class base beside a full model: the base's classes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from machine import machine_line
from safetensors import safe_open

from emotion_vit.features import FEATURE_STATS_FILE

BANKS = {"training bank": ("bank_features", "bank_labels"),
         "unseen bank": ("unseen_bank_features", "unseen_bank_labels")}


def class_separation(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Kornblith et al.'s R^2 with cosine distance, each class weighing the same. With unit vectors the
    mean cosine similarity of a set of pairs is the dot product of means: within class c, |mu_c|^2 (self
    pairs included, as in the paper); between any two faces, |mean of the mu_c|^2."""
    unit = F.normalize(features.float(), dim=1)
    means = torch.stack([unit[labels == c].mean(0) for c in labels.unique()])
    within = 1 - means.square().sum(1).mean()
    total = 1 - means.mean(0).square().sum()
    return float(1 - within / total)


def read_banks(folder: str) -> tuple[list[str], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """A model's label names and its banks' (features, label ids)."""
    with safe_open(str(Path(folder) / FEATURE_STATS_FILE), "pt") as stats:
        keys = set(stats.keys())
        return json.loads(stats.metadata()["labels"]), {
            bank: (stats.get_tensor(x), stats.get_tensor(y)) for bank, (x, y) in BANKS.items() if x in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", required=True, help="Model folders with feature_stats.safetensors.")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    models = {folder: read_banks(folder) for folder in args.models}
    shared = [name for name in models[args.models[0]][0] if all(name in labels for labels, _ in models.values())]
    print(f"on the classes every model has: {', '.join(shared)}")
    print("| model | its classes | " + " | ".join(f"R^2, {bank}" for bank in BANKS) + " |")
    print("|---" * (2 + len(BANKS)) + "|")
    for folder, (labels, banks) in models.items():
        kept = torch.tensor([labels.index(name) for name in shared])
        cells = []
        for bank in BANKS:
            if bank not in banks:
                cells.append("-")
                continue
            features, ids = banks[bank]
            rows = torch.isin(ids, kept)
            cells.append(f"{class_separation(features[rows], ids[rows]):.3f}")
        print(f"| {folder} | {len(labels)} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
