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
from .checks import WEAK_LEAVE_ONE_OUT, reference_folds
from .confusion import build_confusion
from .options import METHODS, AdaptError, AdaptOptions, candidate_methods
from .peft_methods import build_peft
from .prototype import build_gates
from .references import References
from .store import adapted_model


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
    if options.method == "lora" and options.lora_folds:
        candidates[0].details = {**candidates[0].details,
                                 **_cross_validate(base, refs, labels, new_labels, options, progress)}
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
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "references_skipped": len(refs.skipped),  # a count: the files' names stay with their owner
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


def _cross_validate(base: EmotionModel, refs: References, labels: list[str], new_labels: list[str],
                    options: AdaptOptions, progress) -> dict:
    """LoRA, checked as head and confusion are: the references dealt into folds, each fold labelled by an
    adapter built from the others (from the base, as the real one is) and by the model alone; per label,
    the share its adapters labelled right. A report only: the adapter kept is the one built from them all."""
    label_ids = torch.tensor([labels.index(label) for label in refs.labels])
    folds = reference_folds(label_ids, options.lora_folds)
    if not folds:
        return {}
    right, alone = torch.zeros(len(refs.labels), dtype=torch.bool), torch.zeros(len(refs.labels), dtype=torch.bool)
    for i, fold in enumerate(folds):
        held_out = set(fold.tolist())
        kept = [j for j in range(len(refs.labels)) if j not in held_out]
        subset = References(crops=[refs.crops[j] for j in kept], labels=[refs.labels[j] for j in kept])
        built = _build(base, subset, labels, new_labels, options, lambda fraction, message: None)
        adapted = adapted_model(base, built.model, {"labels": labels, "name": "fold"})
        crops = [refs.crops[j] for j in fold.tolist()]
        right[fold] = adapted.predict_proba(crops).argmax(-1) == label_ids[fold]
        alone[fold] = base.predict_proba(crops).argmax(-1) == label_ids[fold]  # the base's ids lead `labels`
        progress((i + 1) / len(folds), f"cross-validated fold {i + 1}/{len(folds)}")
    per_label = {label: round(float(right[label_ids == labels.index(label)].float().mean()), 3)
                 for label in dict.fromkeys(refs.labels)}
    warnings = [f"{label!r}: only {share:.0%} of its references are recognised when held out: add more"
                for label, share in per_label.items() if share < WEAK_LEAVE_ONE_OUT]
    return {"cross_validation": {"folds": len(folds), "strength": 1.0, "per_label": per_label,
                                 "held_out_right": {"0.0": round(float(alone.float().mean()), 3),
                                                    "1.0": round(float(right.float().mean()), 3)}},
            "warnings": warnings}


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
