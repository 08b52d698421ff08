"""Build a "prototype" adapter: embed the references' views, calibrate a gate per label, check it."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..features import embeddings, load_feature_stats
from ..model import EmotionModel
from ..transforms import training_augmentation
from .checks import firing_rates, leave_one_out, unseen_rates, warnings_for
from .classifier import set_labels
from .gates import calibrate_gates, gate_layer, gate_precision, label_views, negatives_bank, unseen_bank
from .options import AdaptOptions
from .references import References


def build_gates(model: nn.Module, base: EmotionModel, refs: References, labels: list[str], options: AdaptOptions,
                progress) -> dict:
    """Install a PrototypeGate on `model`: one prototype and calibrated threshold per referenced label,
    and measure what it will do (emotion_vit/adapt/checks.py)."""
    augment = training_augmentation(options.augmentation_strength, options.seed)
    referenced = list(dict.fromkeys(refs.labels))
    views, clean = {}, {}
    for i, label in enumerate(referenced):
        crops = [crop for crop, name in zip(refs.crops, refs.labels) if name == label]
        grays = [base.preprocessing.gray(crop) for crop in crops]
        features = embeddings(model, label_views(grays, options.views_per_label, base.preprocessing, augment)).float()
        views[label] = F.normalize(features, dim=-1)
        clean[label] = features[0:2 * len(crops):2]  # label_views puts each reference as it is first, then mirrored
        progress(0.6 * (i + 1) / len(referenced), f"embedded the references of {label!r}")
    stats = load_feature_stats(base)  # read once: both banks are in it
    bank = negatives_bank(base, stats, options)
    precision = gate_precision(bank, options)
    gates = calibrate_gates(views, bank, options.false_positive_rate, precision, base.name)
    progress(0.7, "checking the gates on held-out faces")
    loo = leave_one_out(views, clean, model.classifier, labels, bank, options.false_positive_rate, precision)
    unseen = unseen_bank(base, stats)
    fires = unseen_rates(gates, unseen) if unseen else firing_rates(views, bank, options)
    calibration, warnings = {}, []
    for label, (prototype, threshold, _) in gates.items():
        calibration[label] = {
            "threshold": round(float(threshold), 4),
            "references_passing": round(float((views[label] @ prototype > threshold).float().mean()), 3),
            "leave_one_out": None if loo[label] is None else round(loo[label], 3),
            "fires_on": fires.get(label, {}),
        }
        warnings += warnings_for(label, loo[label], fires.get(label, {}))
    model.classifier = gate_layer(model.classifier, labels, gates)
    set_labels(model, labels)
    return {"gates": calibration, "negatives": "feature bank" if bank is not None else "other references",
            "fires_on_faces": "unseen" if unseen else "training", "warnings": warnings}
