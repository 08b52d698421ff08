"""What an adapter is built with, and the error for references that cannot make one."""

from __future__ import annotations

from dataclasses import dataclass, field

METHODS = ("auto", "prototype", "lora", "head", "confusion")


class AdaptError(ValueError):
    """References that cannot make an adapter (empty folder, no faces, ...), or a mismatched base."""


def _option(default, help_text: str, **metadata):
    return field(default=default, metadata={"help": help_text, **metadata})


@dataclass
class AdaptOptions:
    """How an adapter is built: each option is a flag of `train.py adapt` (emotion_vit/flags.py)."""

    method: str = _option("auto", "auto: confusion or head, whichever held-out references favour, when every "
                          "base label has references (a room), else prototype; "
                          "prototype: calibrated gates (the other classes keep the base's answers); lora: peft LoRA "
                          "(moves the backbone); head: a low-rank update of the classifier; confusion: the model's "
                          "answers renamed as the room's references name them.", choices=list(METHODS))
    false_positive_rate: float = _option(0.02, "prototype: the share of other classes' faces a gate may take.")
    gate_direction: str = _option("fisher", "prototype: the direction a gate scores faces along: fisher (the "
                                  "references' mean minus the other classes', through the inverse of the feature "
                                  "bank's within-class covariance) or mean (their mean direction: cosine similarity).",
                                  choices=["fisher", "mean"])
    views_per_label: int = _option(32, "prototype: augmented views of each label's references.")
    rank: int = _option(8, "lora, head: rank of the low-rank update.")
    alpha: int = _option(16, "lora, head: LoRA scaling (alpha / rank).")
    include_mlp: bool = _option(False, "lora: also adapt the MLP projections, not only attention.")
    steps: int = _option(80, "lora: training steps at most (head: 3x as many); stops once the references fit.")
    head_folds: int = _option(5, "head, confusion: folds of the references to cross-validate on (head: 0 keeps its "
                              "update whole).")
    lora_folds: int = _option(5, "lora: folds of the references to cross-validate on, each fold an adapter built "
                              "from the others: a report of how often held-out references come out right, at "
                              "(folds + 1) times the build time (0: none).")
    batch_size: int = _option(32, "lora, head: reference views per step.")
    learning_rate: float = _option(2e-4, "lora: rate of the LoRA matrices (small: the features move little).")
    head_learning_rate: float = _option(2e-3, "lora, head: rate of the classifier.")
    distillation_weight: float = _option(1.0, "lora: weight of keeping the base model's view of other classes.")
    distillation_temperature: float = _option(2.0, "lora: temperature of that distillation.")
    replay_weight: float = _option(1.0, "lora, head: weight of features replayed from the base classes.")
    replay_batch: int = _option(64, "lora, head: replayed features per step.")
    augmentation_strength: float = _option(0.7, "Scale of the reference views' augmentation (0: none).")
    seed: int = _option(42, "Seed of every random draw: the same references and seed give the same adapter.")


def candidate_methods(method: str, base_labels: list[str], referenced: list[str]) -> tuple[str, ...]:
    """What "auto" means for these references. With every base label referenced (a room), both room
    methods are built and the one the held-out references favour is kept, confusion on a tie (it
    changes least): a room read consistently wrong is renamed by confusion, one whose faces the
    features place differently is learned by head (docs/benchmarks.md, "Every label referenced").
    Otherwise new or single labels, where `prototype` keeps the other classes safe."""
    if method != "auto":
        return (method,)
    return ("confusion", "head") if set(base_labels) <= set(referenced) else ("prototype",)
