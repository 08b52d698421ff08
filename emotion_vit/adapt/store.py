"""Adapters on disk: saved beside their metadata, loaded onto the base model they were made for."""

from __future__ import annotations

import json
from pathlib import Path

from peft import PeftModel
from torch import nn
from transformers import AutoModelForImageClassification

from ..model import EmotionModel
from .classifier import grow_classifier, set_labels
from .confusion import ConfusionLayer
from .gates import PrototypeGate
from .options import AdaptError

METADATA_FILE = "emotion_adapter.json"
GATE_FILE = "adapter_model.safetensors"


def save_adapter(model: nn.Module, metadata: dict, folder: str | Path) -> Path:
    """LoRA and head: the peft layout (adapter_config.json, adapter_model.safetensors); prototype and
    confusion: the layer's tensors in adapter_model.safetensors. Each with emotion_adapter.json."""
    from safetensors.torch import save_file
    folder = Path(folder)
    if isinstance(model, PeftModel):
        model.save_pretrained(folder)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        save_file(model.classifier.tensors(), str(folder / GATE_FILE), metadata={"format": model.classifier.FORMAT})
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=1))
    return folder

def load_adapter(base: EmotionModel, folder: str | Path) -> EmotionModel:
    """The base model with the adapter applied; an adapter made for another base is refused."""
    from safetensors.torch import load_file
    folder = Path(folder)
    meta_path = folder / METADATA_FILE
    if not meta_path.is_file() or not (folder / GATE_FILE).is_file():
        raise AdaptError(f"{folder}: not an emotion adapter (needs {GATE_FILE} and {METADATA_FILE})")
    metadata = json.loads(meta_path.read_text())
    if metadata["base_model_sha256"] != base.sha256:
        raise AdaptError(
            f"adapter {metadata['name']!r} was made for base model {metadata['base_model']!r} "
            f"(weights sha256 {metadata['base_model_sha256'][:12]}...), not for {base.name!r} "
            f"(sha256 {base.sha256[:12]}...); rebuild it from its references for this model")
    model = AutoModelForImageClassification.from_pretrained(base.name)
    if metadata.get("method") == "prototype":
        gates = load_file(str(folder / GATE_FILE))
        model.classifier = PrototypeGate(model.classifier, len(metadata["labels"]), **gates)
        set_labels(model, metadata["labels"])
    elif metadata.get("method") == "confusion":
        model.classifier = ConfusionLayer(model.classifier, **load_file(str(folder / GATE_FILE)))
    else:
        grow_classifier(model, metadata["new_labels"])
        model = PeftModel.from_pretrained(model, str(folder))
    return adapted_model(base, model, metadata)


def adapted_model(base: EmotionModel, model: nn.Module, metadata: dict) -> EmotionModel:
    """A built or loaded adapter's model, served as its base is (preprocessing, mirror, precision)."""
    model.eval()
    return EmotionModel(model=model, preprocessing=base.preprocessing, labels=list(metadata["labels"]),
                        name=f"{base.name}+{metadata['name']}", sha256=base.sha256,
                        flip_tta=base.flip_tta, bf16=base.bf16)

def adapter_size_bytes(folder: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())
