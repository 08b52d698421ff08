"""A few real training faces per class, shipped with a model for the adapters that move its backbone.

Feature statistics (features.py) describe the base classes as the base backbone sees them; LoRA changes
that backbone, so replayed features describe what it no longer computes, and a new label learnt from
five faces then spreads over the others. Real faces are seen anew by the adapted model at every step.
`train.py feature-stats` writes them beside the weights (replay_faces.safetensors: 64 per class, 48x48
gray, 1 MB for seven classes).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from .model import EmotionModel

logger = logging.getLogger(__name__)

REPLAY_FACES_FILE = "replay_faces.safetensors"
REPLAY_FACES_PER_CLASS = 64


def sample_replay_faces(split, num_labels: int, per_class: int = REPLAY_FACES_PER_CLASS,
                        seed: int = 0) -> dict[str, torch.Tensor]:
    """`per_class` faces of each class of a training split (seeded): uint8 gray (N, H, W) and label ids."""
    labels = np.asarray(split["label"])
    rng = np.random.default_rng(seed)
    picks = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(num_labels)])
    faces = np.stack([np.asarray(split[int(i)]["image"].convert("L")) for i in picks])
    return {"faces": torch.from_numpy(faces), "labels": torch.from_numpy(labels[picks]).long()}


def save_replay_faces(faces: dict[str, torch.Tensor], labels: list[str], folder: str | Path) -> Path:
    from safetensors.torch import save_file
    path = Path(folder) / REPLAY_FACES_FILE
    save_file({k: v.contiguous() for k, v in faces.items()}, str(path), metadata={"labels": json.dumps(labels)})
    return path


def load_replay_faces(base: EmotionModel) -> dict[str, torch.Tensor] | None:
    """The base model's replay faces, if it ships them (a local folder, or a hub repo)."""
    from safetensors import safe_open
    path = Path(base.name) / REPLAY_FACES_FILE
    if not path.is_file():
        try:
            from huggingface_hub import hf_hub_download
            path = Path(hf_hub_download(base.name, REPLAY_FACES_FILE))
        except Exception:  # no such file, offline, or not a hub id
            logger.info("%s has no %s: lora replays feature statistics instead", base.name, REPLAY_FACES_FILE)
            return None
    with safe_open(str(path), "pt") as f:
        if json.loads(f.metadata()["labels"]) != list(base.labels):
            return None  # faces of other labels than the model's: not usable as its base classes
        return {key: f.get_tensor(key) for key in f.keys()}
