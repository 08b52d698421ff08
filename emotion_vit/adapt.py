"""Few-shot adaptation: a small LoRA adapter from a handful of labelled reference images.

    references/happy/*.jpg, references/confused/*.jpg, ...   (any size; faces are found and cropped)
        -> faces cropped as the live pipeline crops them
        -> the classifier grows a row per new label (base ids unchanged), initialised from the
           references' mean embedding ("imprinting")
        -> peft LoRA on the attention projections, the classifier in modules_to_save, trained
           for a few dozen augmented steps with
              cross-entropy on the references
            + distillation to the base model on the other base classes (its "dark knowledge"),
           so labels absent from the references keep the base model's behaviour
        -> adapter_config.json + adapter_model.safetensors (peft layout) + emotion_adapter.json

Methods (`AdaptOptions.method`): "lora" (above), "head" (LoRA on the classifier only: a
last-layer fine-tune) and "prototype" (imprinting alone, no training). bench/fewshot.py
compares them; the default is the one that measured best.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import AutoModelForImageClassification

from .data import IMAGE_SUFFIXES
from .detect import FaceDetector
from .images import as_rgb_uint8, read_image
from .labels import UnknownLabelError, canonical_label
from .model import EmotionModel
from .pipeline import face_crop
from .transforms import Preprocessing, training_augmentation

logger = logging.getLogger(__name__)

METADATA_FILE = "emotion_adapter.json"
ATTENTION_LINEARS = r".*\.attention\.(query|key|value|proj|q_proj|k_proj|v_proj|o_proj)$"
MLP_LINEARS = r".*\.mlp\.(dense1|dense2|fc1|fc2)$"


class AdaptError(ValueError):
    """References that cannot make an adapter (empty folder, no faces, ...), or a mismatched base."""


@dataclass
class AdaptOptions:
    method: str = "lora"  # lora | head | prototype
    rank: int = 8
    alpha: int = 16
    include_mlp: bool = False  # also adapt the MLP projections
    steps: int = 80  # at most; training stops early once the references are fitted
    batch_size: int = 32
    learning_rate: float = 2e-3
    distillation_weight: float = 1.0
    distillation_temperature: float = 2.0
    augmentation_strength: float = 0.7
    max_seconds: float = 50.0  # time budget for training on a CPU
    seed: int = 42


@dataclass
class References:
    """Face crops with their labels, and the files that gave no face."""

    crops: list[np.ndarray] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "path: reason"

    def counts(self) -> dict[str, int]:
        return dict(Counter(self.labels))

    def add_image(self, image, label: str, source: str, detector: FaceDetector | None,
                  crop_margin: float = 0.15) -> bool:
        """Add the largest face of `image` (any RGB/gray array) under `label`; without a detector the
        image is taken as a face crop. Returns False, and notes why, when there is no face."""
        if detector is None:
            crop = image
        else:
            faces = detector.detect(image)
            if not faces:
                self.skipped.append(f"{source}: no face found")
                return False
            crop = face_crop(as_rgb_uint8(image), faces[0], crop_margin)
        self.crops.append(crop)
        self.labels.append(label_name(label))
        self.sources.append(source)
        return True


def label_name(folder: str) -> str:
    """A folder's label: a known emotion in its canonical spelling, else a new label (lower-case)."""
    try:
        return canonical_label(folder)
    except UnknownLabelError:
        name = re.sub(r"[^a-z0-9_-]+", "_", folder.strip().lower()).strip("_")
        if not name:
            raise AdaptError(f"label folder {folder!r} has no usable name")
        return name


def load_references(folder: str | Path, detector: FaceDetector | None, crop_margin: float = 0.15) -> References:
    """Read `folder/<label>/*` images and crop the largest face of each (no detector: images are crops)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AdaptError(f"references folder not found: {folder}")
    refs = References()
    label_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not label_dirs:
        raise AdaptError(f"{folder}: no label folders (expected {folder}/<label>/<images>)")
    for label_dir in label_dirs:
        for path in sorted(p for p in label_dir.rglob("*") if p.is_file()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                refs.skipped.append(f"{path}: not an image file")
                continue
            try:
                refs.add_image(read_image(path), label_dir.name, str(path), detector, crop_margin)
            except ValueError as error:
                refs.skipped.append(f"{path}: {error}")
    if not refs.crops:
        details = "; ".join(refs.skipped[:5]) or "the label folders are empty"
        raise AdaptError(f"{folder}: no usable reference face ({details})")
    return refs


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
    labels = [model.config.id2label[i] for i in range(old.out_features)] + list(new_labels)
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {name: i for i, name in enumerate(labels)}
    model.config.num_labels = len(labels)


@torch.no_grad()
def embeddings(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The features the classifier sees (its input), captured with a forward hook."""
    captured = []
    hook = model.classifier.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    try:
        model(pixel_values=pixel_values)
    finally:
        hook.remove()
    return captured[0]


@torch.no_grad()
def imprint(model: nn.Module, label_ids: list[int], crops_by_label: dict[int, torch.Tensor], num_base: int) -> None:
    """Initialise classifier rows from the mean embedding of their references (weight imprinting),
    scaled like the base rows, so a new class starts out competitive instead of silent."""
    classifier: nn.Linear = model.classifier
    scale = classifier.weight[:num_base].norm(dim=1).mean()
    for label_id in label_ids:
        mean = embeddings(model, crops_by_label[label_id]).mean(dim=0)
        classifier.weight[label_id] = F.normalize(mean, dim=0) * scale


def _target_modules(options: AdaptOptions) -> str:
    if options.method == "head":
        return r"^classifier$"  # a low-rank update of the last layer only
    return f"({ATTENTION_LINEARS}|{MLP_LINEARS})" if options.include_mlp else ATTENTION_LINEARS


def build_adapter(base: EmotionModel, refs: References, name: str, options: AdaptOptions | None = None,
                  progress: Callable[[float, str], None] | None = None) -> tuple[PeftModel, dict]:
    """Train an adapter on `refs`; returns the peft model and its metadata."""
    options = options or AdaptOptions()
    if options.method not in ("lora", "head", "prototype"):
        raise AdaptError(f"unknown method {options.method!r} (lora, head or prototype)")
    progress = progress or (lambda fraction, message: None)
    torch.manual_seed(options.seed)
    random.seed(options.seed)
    np.random.seed(options.seed)
    started = time.perf_counter()

    model = AutoModelForImageClassification.from_pretrained(base.name).eval()  # a fresh copy: the base stays as is
    base_labels = list(base.labels)
    new_labels = [label for label in dict.fromkeys(refs.labels) if label not in base_labels]
    grow_classifier(model, new_labels)
    labels = base_labels + new_labels
    label_ids = torch.tensor([labels.index(label) for label in refs.labels])
    preprocessing = base.preprocessing
    clean = preprocessing(refs.crops)
    by_label = {int(i): clean[label_ids == i] for i in label_ids.unique()}
    imprint(model, [labels.index(label) for label in new_labels], by_label, len(base_labels))

    targets = _target_modules(options)
    peft_model = get_peft_model(model, LoraConfig(
        r=options.rank, lora_alpha=options.alpha, lora_dropout=0.0, target_modules=targets,
        modules_to_save=None if options.method == "head" else ["classifier"]))
    steps_done = 0
    if options.method != "prototype":
        steps_done = _train(peft_model, refs.crops, label_ids, len(base_labels), preprocessing, options, progress)
    peft_model.eval()
    metadata = {
        "name": name, "labels": labels, "new_labels": new_labels, "base_labels": base_labels,
        "references_per_label": refs.counts(), "base_model": base.name, "base_model_sha256": base.sha256,
        "method": options.method, "options": asdict(options), "training_steps": steps_done,
        "seconds": round(time.perf_counter() - started, 2),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "skipped_references": refs.skipped,
    }
    progress(1.0, f"adapter {name!r} ready ({steps_done} steps, {metadata['seconds']:.0f} s)")
    return peft_model, metadata


def _train(model: PeftModel, crops: list[np.ndarray], label_ids: torch.Tensor, num_base: int,
           preprocessing: Preprocessing, options: AdaptOptions, progress) -> int:
    """Augmented, class-balanced steps of cross-entropy + distillation; stops early once fitted."""
    augment = training_augmentation(options.augmentation_strength)
    grays = [preprocessing.gray(crop) for crop in crops]
    by_label = {int(i): np.flatnonzero(label_ids.numpy() == i) for i in label_ids.unique()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=options.learning_rate, weight_decay=0.0)
    temperature, started, fitted_steps = options.distillation_temperature, time.perf_counter(), 0
    model.train()
    for step in range(1, options.steps + 1):
        # Class-balanced batch: k may differ per label, down to a single reference.
        picks = [int(np.random.choice(by_label[random.choice(list(by_label))])) for _ in range(options.batch_size)]
        pixels = preprocessing.normalize([preprocessing.resize(augment(image=grays[i])["image"]) for i in picks])
        targets = label_ids[picks]
        logits = model(pixel_values=pixels).logits
        loss = F.cross_entropy(logits, targets)
        if options.distillation_weight > 0:
            with torch.no_grad(), model.disable_adapter():
                teacher = model(pixel_values=pixels).logits[:, :num_base]
            # Keep the base model's view of every *other* base class: mask each example's own label.
            mask = F.one_hot(targets.clamp(max=num_base - 1), num_base).bool() & (targets < num_base)[:, None]
            student = logits[:, :num_base].masked_fill(mask, -1e4) / temperature
            teacher = teacher.masked_fill(mask, -1e4) / temperature
            distill = F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True,
                               reduction="batchmean") * temperature ** 2
            loss = loss + options.distillation_weight * distill
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        fitted_steps = fitted_steps + 1 if (logits.argmax(-1) == targets).all() else 0
        progress(step / options.steps, f"step {step}/{options.steps}, loss {loss.item():.3f}")
        if fitted_steps >= 10 or time.perf_counter() - started > options.max_seconds:
            break  # every reference right for 10 batches in a row, or out of time
    return step


def save_adapter(model: PeftModel, metadata: dict, folder: str | Path) -> Path:
    """peft layout (adapter_config.json, adapter_model.safetensors) plus emotion_adapter.json."""
    folder = Path(folder)
    model.save_pretrained(folder)
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=1))
    return folder


def load_adapter(base: EmotionModel, folder: str | Path) -> EmotionModel:
    """The base model with the adapter applied; an adapter made for another base is refused."""
    folder = Path(folder)
    meta_path = folder / METADATA_FILE
    if not meta_path.is_file() or not (folder / "adapter_config.json").is_file():
        raise AdaptError(f"{folder}: not an emotion adapter (needs adapter_config.json and {METADATA_FILE})")
    metadata = json.loads(meta_path.read_text())
    if metadata["base_model_sha256"] != base.sha256:
        raise AdaptError(
            f"adapter {metadata['name']!r} was made for base model {metadata['base_model']!r} "
            f"(weights sha256 {metadata['base_model_sha256'][:12]}...), not for {base.name!r} "
            f"(sha256 {base.sha256[:12]}...); rebuild it from its references for this model")
    model = AutoModelForImageClassification.from_pretrained(base.name)
    grow_classifier(model, metadata["new_labels"])
    model = PeftModel.from_pretrained(model, str(folder)).eval()
    return EmotionModel(model=model, preprocessing=base.preprocessing, labels=list(metadata["labels"]),
                        name=f"{base.name}+{metadata['name']}", sha256=base.sha256)


def adapter_size_bytes(folder: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())

