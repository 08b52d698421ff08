"""The "prototype" method: a calibrated gate per referenced label on the frozen model's embedding."""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..features import FEATURE_STATS_FILE, FeatureReplay
from ..model import EmotionModel
from ..transforms import Preprocessing
from .options import AdaptError, AdaptOptions

logger = logging.getLogger(__name__)


class PrototypeGate(nn.Module):
    """The base classifier plus one calibrated gate per referenced label:

        p = (1 - sum_j g_j) * softmax(base logits) + sum_j g_j * onehot(label_j)
        g_j = sigmoid((unit(feature) . direction_j - threshold_j) / temperature_j)

    (a gate's unit `direction` is stored as its "prototype": the references' mean direction, where the
    score is their cosine similarity, or their Fisher direction against the other classes, calibrate_gate)

    returned as log p, so that softmax(output) == p: every caller (pipeline, flip TTA, API) treats
    it as logits. While no gate is open the base model's probabilities are unchanged."""

    FORMAT = "emotion_vit.gates"  # saved in the safetensors header

    def __init__(self, base: nn.Linear, num_labels: int, prototypes: torch.Tensor, thresholds: torch.Tensor,
                 temperatures: torch.Tensor, targets: torch.Tensor):
        super().__init__()
        self.base, self.num_labels = base, num_labels
        self.register_buffer("prototypes", prototypes.float())  # (gates, features), unit length
        self.register_buffer("thresholds", thresholds.float())
        self.register_buffer("temperatures", temperatures.float())
        self.register_buffer("targets", targets.long())  # each gate's output column

    def gates(self, features: torch.Tensor) -> torch.Tensor:
        similarity = F.normalize(features.float(), dim=-1) @ self.prototypes.T
        gates = torch.sigmoid((similarity - self.thresholds) / self.temperatures)
        return gates / gates.sum(-1, keepdim=True).clamp(min=1.0)  # several open gates share the mass

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        probabilities = F.pad(self.base(features).float().softmax(-1), (0, self.num_labels - self.base.out_features))
        gates = self.gates(features)
        mixed = (probabilities * (1 - gates.sum(-1, keepdim=True))).index_add(1, self.targets, gates)
        return mixed.clamp_min(1e-12).log()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: buffer.contiguous() for name, buffer in self.named_buffers()}


def label_views(grays: list[np.ndarray], count: int, preprocessing: Preprocessing, augment) -> torch.Tensor:
    """Each reference as it is and mirrored, then augmented views until `count`."""
    images = [view for gray in grays for view in (gray, gray[:, ::-1])]
    images += [augment(image=grays[i % len(grays)])["image"] for i in range(max(count - len(images), 0))]
    return preprocessing.normalize([preprocessing.resize(np.ascontiguousarray(image)) for image in images])


def negatives_bank(base: EmotionModel, stats: dict[str, torch.Tensor] | None, options: AdaptOptions
                   ) -> tuple[torch.Tensor, list[str]] | None:
    """Unit-length real features of the base classes (the bank in the base's feature statistics `stats`),
    or samples of their Gaussians, with their labels."""
    if stats is None:
        return None
    if "bank_features" in stats:
        features, ids = stats["bank_features"].float(), stats["bank_labels"]
    else:  # statistics written before the bank existed
        logger.warning("%s: feature statistics without a bank; calibrating on Gaussian samples", base.name)
        generator = torch.Generator().manual_seed(options.seed)
        features, ids = FeatureReplay(stats).sample(4096, generator)
    return F.normalize(features, dim=-1), [base.labels[int(i)] for i in ids]


def unseen_bank(base: EmotionModel, stats: dict[str, torch.Tensor] | None) -> tuple[torch.Tensor, list[str]] | None:
    """Unit-length features of faces the base did not train on (its validation split), with their labels:
    where the build-time report measures what a gate takes. None for statistics written before it existed."""
    if stats is None or "unseen_bank_features" not in stats:
        return None
    names = [base.labels[int(i)] for i in stats["unseen_bank_labels"]]
    return F.normalize(stats["unseen_bank_features"].float(), dim=-1), names


def within_class_precision(bank: tuple[torch.Tensor, list[str]]) -> torch.Tensor:
    """The inverse of the bank's within-class covariance, shrunk 10% toward its mean variance so that it
    inverts with 256 faces a class: the metric of Fisher's discriminant."""
    features, names = bank
    classes = [features[[name == label for name in names]] for label in dict.fromkeys(names)]
    centred = torch.cat([faces - faces.mean(0) for faces in classes])
    covariance = centred.T @ centred / len(centred)
    covariance = 0.9 * covariance + 0.1 * covariance.diagonal().mean() * torch.eye(len(covariance))
    return torch.linalg.inv(covariance)


def gate_precision(bank: tuple[torch.Tensor, list[str]] | None, options: AdaptOptions) -> torch.Tensor | None:
    """The metric gates calibrated on `bank` take their direction in: its within-class precision for the
    Fisher direction (`options.gate_direction`), None for the mean direction or without a bank. Computed
    once per bank: the build-time checks calibrate on the same bank again and again."""
    return within_class_precision(bank) if bank is not None and options.gate_direction == "fisher" else None


def calibrate_gate(views: torch.Tensor, negatives: torch.Tensor, false_positive_rate: float,
                   precision: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A label's unit direction, the threshold that `false_positive_rate` of the unit `negatives` pass along
    it, and the gate's temperature. Without `precision`, the direction is the mean of its views' unit
    embeddings (the score is their cosine similarity); with it, Fisher's: the views' mean minus the
    negatives', through `precision`, which discounts the directions faces of one class vary along (who
    they are, the light) and keeps the one that tells this label from the others."""
    if precision is None:
        direction = F.normalize(views.mean(0), dim=0)
    else:
        direction = F.normalize(precision @ (views.mean(0) - negatives.mean(0)), dim=0)
    similarity = negatives @ direction
    return direction, torch.quantile(similarity, 1 - false_positive_rate), (similarity.std() / 8).clamp(min=1e-3)


def calibrate_gates(views: dict[str, torch.Tensor], bank: tuple[torch.Tensor, list[str]] | None,
                    false_positive_rate: float, precision: torch.Tensor | None, base_name: str = "the base model",
                    min_negatives: int = 20) -> dict[str, tuple]:
    """Each referenced label's (direction, threshold, temperature): its negatives are the other labels'
    views and the bank's faces of every other class (at least `min_negatives`, else AdaptError); the
    direction in the bank's `precision` (gate_precision)."""
    gates = {}
    for label in views:
        negatives = [views[other] for other in views if other != label]
        if bank is not None:
            features, names = bank
            negatives.append(features[[name != label for name in names]])
        if sum(len(n) for n in negatives) < max(min_negatives, 1):
            raise AdaptError(
                f"cannot calibrate {label!r}: the prototype method needs faces of other classes, and {base_name} "
                f"has no {FEATURE_STATS_FILE} (write it with `python train.py feature-stats`) while the references "
                f"hold no other label; add references of another label, or use the lora method")
        gates[label] = calibrate_gate(views[label], torch.cat(negatives), false_positive_rate, precision)
    return gates


def gate_layer(base: nn.Linear, labels: list[str], gates: dict[str, tuple]) -> PrototypeGate:
    prototypes, thresholds, temperatures = (torch.stack(column) for column in zip(*gates.values()))
    return PrototypeGate(base, len(labels), prototypes, thresholds, temperatures,
                         torch.tensor([labels.index(label) for label in gates]))
