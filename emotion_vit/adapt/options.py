"""What an adapter is built with, and the error for references that cannot make one."""

from __future__ import annotations

from dataclasses import dataclass

METHODS = ("prototype", "lora", "head")


class AdaptError(ValueError):
    """References that cannot make an adapter (empty folder, no faces, ...), or a mismatched base."""

@dataclass
class AdaptOptions:
    method: str = "prototype"  # prototype | lora | head
    false_positive_rate: float = 0.02  # prototype: the share of other classes' faces a gate may take
    views_per_label: int = 32  # prototype: augmented views of each label's references
    rank: int = 8
    alpha: int = 16
    include_mlp: bool = False  # also adapt the MLP projections
    steps: int = 80  # at most; training stops early once the references are fitted
    batch_size: int = 32
    learning_rate: float = 2e-4  # LoRA matrices: small, so the backbone's features move little
    head_learning_rate: float = 2e-3  # the classifier (and the "head" method)
    distillation_weight: float = 1.0
    distillation_temperature: float = 2.0
    replay_weight: float = 1.0  # cross-entropy on features sampled from the base classes' statistics
    replay_batch: int = 64
    augmentation_strength: float = 0.7
    seed: int = 42
