"""Build an adapter from references with one of the methods (see emotion_vit/adapt/__init__.py)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

import numpy as np
import torch
from torch import nn
from transformers import AutoModelForImageClassification

from ..features import FeatureReplay
from ..model import EmotionModel
from .confusion import build_confusion
from .options import METHODS, AdaptError, AdaptOptions, candidate_methods
from .peft_methods import build_peft
from .prototype import build_gates
from .references import References


def build_adapter(base: EmotionModel, refs: References, name: str, options: AdaptOptions | None = None,
                  progress: Callable[[float, str], None] | None = None) -> tuple[nn.Module, dict]:
    """Build an adapter from `refs`; returns the adapted model (a PeftModel for lora and head, the
    base architecture with a PrototypeGate for prototype, a ConfusionLayer for confusion) and its metadata."""
    options = options or AdaptOptions()
    if options.method not in METHODS:
        raise AdaptError(f"unknown method {options.method!r} ({', '.join(METHODS)})")
    progress = progress or (lambda fraction, message: None)
    started = time.perf_counter()

    base_labels = list(base.labels)
    new_labels = [label for label in dict.fromkeys(refs.labels) if label not in base_labels]
    labels = base_labels + new_labels
    candidates = [_build(base, refs, labels, new_labels, replace(options, method=method), progress)
                  for method in candidate_methods(options.method, base_labels, refs.labels)]
    chosen = max(candidates, key=lambda built: built.held_out_share())  # the first of equals: confusion
    details = chosen.details
    if len(candidates) > 1:  # auto in a room: what each method's adapter labelled right of held-out references
        details = {**details, "chosen_from": {built.options.method: built.held_out_share() for built in candidates}}
    chosen.model.eval()
    metadata = {
        "name": name, "labels": labels, "new_labels": new_labels, "base_labels": base_labels,
        "references_per_label": refs.counts(), "base_model": base.name, "base_model_sha256": base.sha256,
        "method": chosen.options.method, "options": asdict(chosen.options), "feature_replay": chosen.replay is not None,
        "training_steps": chosen.steps, **details, "seconds": round(time.perf_counter() - started, 2),
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "skipped_references": refs.skipped,
    }
    progress(1.0, f"adapter {name!r} ready ({metadata['seconds']:.0f} s)")
    return chosen.model, metadata


@dataclass
class _Built:
    model: nn.Module
    steps: int
    replay: FeatureReplay | None
    details: dict
    options: AdaptOptions

    def held_out_share(self) -> float:
        """The share of held-out references a room adapter labels right (its cross-validation), -1 without one."""
        folds = self.details.get("cross_validation", {})
        return folds["held_out_right"][str(folds["strength"])] if folds.get("held_out_right") else -1.0


def _build(base: EmotionModel, refs: References, labels: list[str], new_labels: list[str], options: AdaptOptions,
           progress) -> _Built:
    """One method's adapter on a fresh copy of the base (the base stays as it is), seeded afresh."""
    torch.manual_seed(options.seed)
    random.seed(options.seed)
    np.random.seed(options.seed)
    model = AutoModelForImageClassification.from_pretrained(base.name).eval()
    if options.method == "prototype":
        return _Built(model, 0, None, build_gates(model, base, refs, labels, options, progress), options)
    if options.method == "confusion":
        return _Built(model, 0, None, build_confusion(model, base, refs, options, progress), options)
    return _Built(*build_peft(model, base, refs, labels, new_labels, options, progress), options)
