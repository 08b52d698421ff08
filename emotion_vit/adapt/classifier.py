"""The classifier layer of an adapted model: rows for new labels, imprinted from references."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..features import embeddings


def grow_classifier(model: nn.Module, new_labels: list[str]) -> None:
    """Append output rows for new labels; existing rows (and so the base classes' ids) are unchanged."""
    if not new_labels:
        return
    old: nn.Linear = model.classifier
    grown = nn.Linear(old.in_features, old.out_features + len(new_labels), bias=old.bias is not None)
    with torch.no_grad():
        grown.weight[:old.out_features] = old.weight
        grown.weight[old.out_features:] = 0.0
        if old.bias is not None:
            grown.bias[:old.out_features] = old.bias
            grown.bias[old.out_features:] = old.bias.mean()
    model.classifier = grown
    set_labels(model, [model.config.id2label[i] for i in range(old.out_features)] + list(new_labels))

def set_labels(model: nn.Module, labels: list[str]) -> None:
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {name: i for i, name in enumerate(labels)}
    model.config.num_labels = len(labels)

@torch.no_grad()
def imprint(model: nn.Module, label_ids: list[int], crops_by_label: dict[int, torch.Tensor], num_base: int) -> None:
    """Initialise classifier rows from the mean embedding of their references (weight imprinting),
    scaled like the base rows, so a new class starts out competitive instead of silent. A label without
    references here (a cross-validation fold that holds out its only one) keeps its silent zero row."""
    classifier: nn.Linear = model.classifier
    scale = classifier.weight[:num_base].norm(dim=1).mean()
    for label_id in filter(lambda i: i in crops_by_label, label_ids):
        mean = embeddings(model, crops_by_label[label_id]).mean(dim=0)
        classifier.weight[label_id] = F.normalize(mean, dim=0) * scale
