"""The classifier's input features: per-class statistics of a training set, shipped with a model.

Training writes them beside the weights (feature_stats.safetensors); the few-shot adapters replay
them as the base classes' examples and calibrate their gates on the bank of real features.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from .model import EmotionModel

logger = logging.getLogger(__name__)

FEATURE_STATS_FILE = "feature_stats.safetensors"


class FeatureStatsError(ValueError):
    """Feature statistics that do not belong to the model they ship with."""


@torch.no_grad()
def embeddings(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The features the classifier sees (its input), captured with a forward hook."""
    captured = []
    hook = model.classifier.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    try:
        model(pixel_values=pixel_values)
    finally:
        hook.remove()
    return captured[0]


@torch.no_grad()
def compute_feature_stats(model: nn.Module, batches, num_labels: int, bank_per_class: int = 256,
                          seed: int = 0) -> dict[str, torch.Tensor]:
    """Per-class means and the pooled within-class covariance of the classifier's input features,
    over (pixel_values, label ids) batches of a training set, and a bank of `bank_per_class` real
    features per class (float16): the negatives that calibrate the prototype gates."""
    model.eval()
    features, ids = [], []
    for pixel_values, labels in batches:
        features.append(embeddings(model, pixel_values).float())
        ids.append(torch.as_tensor(labels))
    features, ids = torch.cat(features), torch.cat(ids)
    counts = torch.bincount(ids, minlength=num_labels)
    means = torch.zeros(num_labels, features.shape[1]).index_add_(0, ids, features) / counts.clamp(min=1)[:, None]
    centred = features - means[ids]
    covariance = centred.T @ centred / max(len(features) - num_labels, 1)
    bank_features, bank_labels = _bank(features, ids, num_labels, bank_per_class, seed)
    return {"means": means, "counts": counts, "covariance": covariance,
            "bank_features": bank_features, "bank_labels": bank_labels}


@torch.no_grad()
def compute_unseen_bank(model: nn.Module, batches, num_labels: int, bank_per_class: int = 256,
                        seed: int = 0) -> dict[str, torch.Tensor]:
    """A bank of features of faces the model did not train on (a validation split): what a gate takes of
    them is what it will take of a classroom's faces. Training faces sit closer to their class, so a gate
    calibrated on them lets more unseen faces through than it did training faces (docs/benchmarks.md)."""
    model.eval()
    features, ids = zip(*[(embeddings(model, pixel_values).float(), torch.as_tensor(labels))
                          for pixel_values, labels in batches])
    bank_features, bank_labels = _bank(torch.cat(features), torch.cat(ids), num_labels, bank_per_class, seed)
    return {"unseen_bank_features": bank_features, "unseen_bank_labels": bank_labels}


def _bank(features: torch.Tensor, ids: torch.Tensor, num_labels: int, per_class: int, seed: int):
    """Up to `per_class` features of each class, drawn seeded (float16), and their label ids."""
    generator = torch.Generator().manual_seed(seed)
    picks = torch.cat([members[torch.randperm(len(members), generator=generator)[:per_class]]
                       for members in (torch.nonzero(ids == c).flatten() for c in range(num_labels))])
    return features[picks].half(), ids[picks]

def dataset_batches(split, batch_size: int = 512):
    """(pixel_values, labels) batches of a split that carries an eval transform."""
    for start in range(0, len(split), batch_size):
        batch = split[start:start + batch_size]
        yield batch["pixel_values"], batch["labels"]

def save_feature_stats(stats: dict[str, torch.Tensor], labels: list[str], folder: str | Path) -> Path:
    from safetensors.torch import save_file
    path = Path(folder) / FEATURE_STATS_FILE
    save_file({k: v.contiguous() for k, v in stats.items()}, str(path), metadata={"labels": json.dumps(labels)})
    return path

def load_feature_stats(base: EmotionModel) -> dict[str, torch.Tensor] | None:
    """The base model's feature statistics, if it ships them (local folder or hub repo)."""
    from safetensors import safe_open
    path = Path(base.name) / FEATURE_STATS_FILE
    if not path.is_file():
        try:
            from huggingface_hub import hf_hub_download
            path = Path(hf_hub_download(base.name, FEATURE_STATS_FILE))
        except Exception:  # no such file, offline, or not a hub id
            logger.warning("%s has no %s: adapting without feature replay", base.name, FEATURE_STATS_FILE)
            return None
    with safe_open(str(path), "pt") as f:
        if json.loads(f.metadata()["labels"]) != list(base.labels):
            raise FeatureStatsError(f"{path}: statistics for other labels than the model's {base.labels}")
        return {key: f.get_tensor(key) for key in f.keys()}

class FeatureReplay:
    """Samples features of the base classes from N(mean_c, pooled covariance)."""

    def __init__(self, stats: dict[str, torch.Tensor]):
        covariance = stats["covariance"].double()
        ridge = 1e-3 * covariance.diagonal().mean()
        self.cholesky = torch.linalg.cholesky(
            covariance + ridge * torch.eye(len(covariance), dtype=torch.double)
        ).float()
        self.means = stats["means"].float()
        self.present = torch.nonzero(stats["counts"] > 0).flatten()

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        labels = self.present[torch.randint(len(self.present), (n,), generator=generator)]
        noise = torch.randn(n, self.means.shape[1], generator=generator)
        return self.means[labels] + noise @ self.cholesky.T, labels
