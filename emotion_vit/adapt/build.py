"""Build an adapter from references with one of the methods (see emotion_vit/adapt/__init__.py)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime

import numpy as np
import torch
from torch import nn
from transformers import AutoModelForImageClassification

from ..model import EmotionModel
from .options import METHODS, AdaptError, AdaptOptions, resolve_method
from .peft_methods import build_peft
from .prototype import build_gates
from .references import References


def build_adapter(base: EmotionModel, refs: References, name: str, options: AdaptOptions | None = None,
                  progress: Callable[[float, str], None] | None = None) -> tuple[nn.Module, dict]:
    """Build an adapter from `refs`; returns the adapted model (a PeftModel for lora and head, the
    base architecture with a PrototypeGate for prototype) and its metadata."""
    options = options or AdaptOptions()
    if options.method not in METHODS:
        raise AdaptError(f"unknown method {options.method!r} ({', '.join(METHODS)})")
    progress = progress or (lambda fraction, message: None)
    torch.manual_seed(options.seed)
    random.seed(options.seed)
    np.random.seed(options.seed)
    started = time.perf_counter()

    model = AutoModelForImageClassification.from_pretrained(base.name).eval()  # a fresh copy: the base stays as is
    base_labels = list(base.labels)
    new_labels = [label for label in dict.fromkeys(refs.labels) if label not in base_labels]
    labels = base_labels + new_labels
    options = replace(options, method=resolve_method(options.method, base_labels, refs.labels))
    if options.method == "prototype":
        adapted, steps_done, replay = model, 0, None
        details = build_gates(model, base, refs, labels, options, progress)
    else:
        adapted, steps_done, replay, details = build_peft(model, base, refs, labels, new_labels, options, progress)
    adapted.eval()
    metadata = {
        "name": name, "labels": labels, "new_labels": new_labels, "base_labels": base_labels,
        "references_per_label": refs.counts(), "base_model": base.name, "base_model_sha256": base.sha256,
        "method": options.method, "options": asdict(options), "feature_replay": replay is not None,
        "training_steps": steps_done, **details, "seconds": round(time.perf_counter() - started, 2),
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "skipped_references": refs.skipped,
    }
    progress(1.0, f"adapter {name!r} ready ({metadata['seconds']:.0f} s)")
    return adapted, metadata
