"""Few-shot adaptation: a small adapter from a handful of labelled reference images.

    references/happy/*.jpg, references/confused/*.jpg, ...   (any size; faces are found and cropped)
        -> faces cropped as the live pipeline crops them
        -> one of four methods (`AdaptOptions.method`; "auto", the default, takes prototype for new or
           single labels, and in a room, every base label referenced, builds confusion and head and keeps
           the one that labels held-out references right most often)

    "prototype"
        A calibrated gate per referenced label on the frozen model's embedding. The gate scores
        a face along the label's Fisher direction (its references' augmented views' mean minus the
        other classes', through the inverse of the bank's within-class covariance; or their mean
        direction, `gate_direction` "mean") and opens when the score passes a threshold set so that only
        `false_positive_rate` (2%) of real faces of the *other* classes pass (the feature bank
        of training faces that ships with the base model in feature_stats.safetensors; faces the
        model never saw pass more often, which the build-time report measures on a second bank of
        them). Closed, the base model's probabilities are untouched; open, the label takes their
        place. So a new class takes a bounded share of the others, not all of them.
        Saved as adapter_model.safetensors (each gate's direction, threshold, temperature) + emotion_adapter.json.
    "lora"
        peft LoRA on the attention projections, the classifier (grown by a row per new label,
        imprinted from the references) in modules_to_save, a few dozen augmented steps of
            cross-entropy on the references
          + cross-entropy on features replayed from the base classes' Gaussians
          + distillation to the base model on the other base classes.
        It moves the backbone, so it fits the references' faces and camera most closely, but a new
        class then spreads over the other classes.
        Saved in the peft layout: adapter_config.json + adapter_model.safetensors + emotion_adapter.json.
    "head"
        A low-rank (LoRA) update of the classifier alone on frozen features of augmented views,
        against the replayed features; peft layout. Cross-validated on the references when built,
        it keeps only as much of the update as the held-out references support (0 to all of it).
    "confusion"
        The model untouched, its probabilities mapped through a confusion matrix fitted to the
        references: what the room calls each of the model's answers (a room read consistently wrong).
        Every base label referenced, no new label. The matrix in adapter_model.safetensors.
"""

from ..features import (
    FEATURE_STATS_FILE,
    FeatureReplay,
    FeatureStatsError,
    compute_feature_stats,
    embeddings,
    load_feature_stats,
)
from .build import build_adapter
from .checks import calibration_warnings, check_lines, check_on_faces, load_calibration_faces
from .classifier import grow_classifier, imprint, set_labels
from .gates import PrototypeGate, calibrate_gate
from .options import METHODS, AdaptError, AdaptOptions
from .references import References, label_name, load_references
from .store import GATE_FILE, METADATA_FILE, adapted_model, adapter_size_bytes, load_adapter, save_adapter

__all__ = [
    "FEATURE_STATS_FILE", "GATE_FILE", "METADATA_FILE", "METHODS", "AdaptError", "AdaptOptions", "FeatureReplay",
    "FeatureStatsError", "PrototypeGate", "References", "adapted_model", "adapter_size_bytes", "build_adapter",
    "calibrate_gate", "calibration_warnings", "check_lines", "check_on_faces", "compute_feature_stats", "embeddings",
    "grow_classifier", "imprint", "label_name", "load_adapter", "load_calibration_faces", "load_feature_stats",
    "load_references", "save_adapter", "set_labels",
]
