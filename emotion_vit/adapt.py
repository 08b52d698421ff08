"""Few-shot adaptation: a small adapter from a handful of labelled reference images.

    references/happy/*.jpg, references/confused/*.jpg, ...   (any size; faces are found and cropped)
        -> faces cropped as the live pipeline crops them
        -> one of three methods (`AdaptOptions.method`):

    "prototype" (the default: it measured best in bench/fewshot.py, docs/benchmarks.md)
        A calibrated gate per referenced label on the frozen model's embedding. The label's
        prototype is the mean direction of its references' augmented views; the gate opens
        when a face's cosine similarity to it passes a threshold set so that only
        `false_positive_rate` (2%) of real faces of the *other* classes pass (the feature bank
        of training faces that ships with the base model in feature_stats.safetensors). Closed,
        the base model's probabilities are untouched; open, the label takes their place. So a
        new class cannot swallow the others: they lose at most about that rate, by construction.
        Saved as adapter_model.safetensors (prototypes, thresholds) + emotion_adapter.json.
    "lora"
        peft LoRA on the attention projections, the classifier (grown by a row per new label,
        imprinted from the references) in modules_to_save, a few dozen augmented steps of
            cross-entropy on the references
          + cross-entropy on features replayed from the base classes' Gaussians
          + distillation to the base model on the other base classes.
        It moves the backbone, so it fits the references' camera and faces best (the choice when
        every label has references), but a new class then spreads over the other classes.
        Saved in the peft layout: adapter_config.json + adapter_model.safetensors + emotion_adapter.json.
    "head"
        A low-rank (LoRA) update of the classifier alone on frozen features of augmented views,
        against the replayed features; peft layout.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import AutoModelForImageClassification

from .crop import CropGeometry, find_faces
from .detect import FaceDetector
from .images import IMAGE_SUFFIXES, as_rgb_uint8, read_image
from .labels import UnknownLabelError, canonical_label
from .model import EmotionModel
from .transforms import Preprocessing, training_augmentation

logger = logging.getLogger(__name__)

METADATA_FILE = "emotion_adapter.json"
FEATURE_STATS_FILE = "feature_stats.safetensors"
ATTENTION_LINEARS = r".*\.attention\.(query|key|value|proj|q_proj|k_proj|v_proj|o_proj)$"
MLP_LINEARS = r".*\.mlp\.(dense1|dense2|fc1|fc2)$"


METHODS = ("prototype", "lora", "head")
GATE_FILE = "adapter_model.safetensors"


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
                  geometry: CropGeometry | None = None) -> bool:
        """Add the largest face of `image` (any RGB/gray array) under `label`, cut as the live view cuts it
        (a face-sized image is taken whole); without a detector the image is taken as a face crop.
        Returns False, and notes why, when there is no face."""
        if detector is None:
            crop = image
        else:
            image = as_rgb_uint8(image)
            faces = find_faces(detector, image)
            if not faces:
                self.skipped.append(f"{source}: no face found")
                return False
            crop = (geometry or CropGeometry()).face_crop(image, faces[0])
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
            raise AdaptError(f"label folder {folder!r} has no usable name") from None
        return name


def load_references(folder: str | Path, detector: FaceDetector | None,
                    geometry: CropGeometry | None = None) -> References:
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
                refs.add_image(read_image(path), label_dir.name, str(path), detector, geometry)
            except ValueError as error:
                refs.skipped.append(f"{path}: {error}")
    if not refs.crops:
        details = "; ".join(refs.skipped[:5]) or "the label folders are empty"
        raise AdaptError(f"{folder}: no usable reference face ({details})")
    empty = [d for d in label_dirs if label_name(d.name) not in refs.labels]
    if empty:  # a label left out silently would make an adapter that never learned it
        why = "; ".join(s for s in refs.skipped if any(s.startswith(str(d)) for d in empty)) or "no images"
        raise AdaptError(f"{folder}: no usable reference face for {', '.join(d.name for d in empty)} ({why}); "
                         "for photos that are already face crops, use --already-cropped")
    return refs


@torch.no_grad()
def compute_feature_stats(model: nn.Module, batches, num_labels: int, bank_per_class: int = 256,
                          seed: int = 0) -> dict[str, torch.Tensor]:
    """Per-class means and the pooled within-class covariance of the classifier's input features,
    over (pixel_values, label ids) batches of a training set, and a bank of `bank_per_class` real
    features per class (float16): the negatives that calibrate the prototype gates."""
    model.eval()
    features, ids = [], []
    for pixel_values, labels in batches:
        features.append(embeddings(model, pixel_values).float())
        ids.append(torch.as_tensor(labels))
    features, ids = torch.cat(features), torch.cat(ids)
    counts = torch.bincount(ids, minlength=num_labels)
    means = torch.zeros(num_labels, features.shape[1]).index_add_(0, ids, features) / counts.clamp(min=1)[:, None]
    centred = features - means[ids]
    covariance = centred.T @ centred / max(len(features) - num_labels, 1)
    generator = torch.Generator().manual_seed(seed)
    bank = torch.cat([members[torch.randperm(len(members), generator=generator)[:bank_per_class]]
                      for members in (torch.nonzero(ids == c).flatten() for c in range(num_labels))])
    return {"means": means, "counts": counts, "covariance": covariance,
            "bank_features": features[bank].half(), "bank_labels": ids[bank]}


def dataset_batches(split, batch_size: int = 512):
    """(pixel_values, labels) batches of a split that carries an eval transform."""
    for start in range(0, len(split), batch_size):
        batch = split[start:start + batch_size]
        yield batch["pixel_values"], batch["labels"]


def save_feature_stats(stats: dict[str, torch.Tensor], labels: list[str], folder: str | Path) -> Path:
    from safetensors.torch import save_file
    path = Path(folder) / FEATURE_STATS_FILE
    save_file({k: v.contiguous() for k, v in stats.items()}, str(path), metadata={"labels": json.dumps(labels)})
    return path


def load_feature_stats(base: EmotionModel) -> dict[str, torch.Tensor] | None:
    """The base model's feature statistics, if it ships them (local folder or hub repo)."""
    from safetensors import safe_open
    path = Path(base.name) / FEATURE_STATS_FILE
    if not path.is_file():
        try:
            from huggingface_hub import hf_hub_download
            path = Path(hf_hub_download(base.name, FEATURE_STATS_FILE))
        except Exception:  # no such file, offline, or not a hub id
            logger.warning("%s has no %s: adapting without feature replay", base.name, FEATURE_STATS_FILE)
            return None
    with safe_open(str(path), "pt") as f:
        if json.loads(f.metadata()["labels"]) != list(base.labels):
            raise AdaptError(f"{path}: statistics for other labels than the model's {base.labels}")
        return {key: f.get_tensor(key) for key in f.keys()}


class FeatureReplay:
    """Samples features of the base classes from N(mean_c, pooled covariance)."""

    def __init__(self, stats: dict[str, torch.Tensor]):
        covariance = stats["covariance"].double()
        ridge = 1e-3 * covariance.diagonal().mean()
        self.cholesky = torch.linalg.cholesky(
            covariance + ridge * torch.eye(len(covariance), dtype=torch.double)
        ).float()
        self.means = stats["means"].float()
        self.present = torch.nonzero(stats["counts"] > 0).flatten()

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        labels = self.present[torch.randint(len(self.present), (n,), generator=generator)]
        noise = torch.randn(n, self.means.shape[1], generator=generator)
        return self.means[labels] + noise @ self.cholesky.T, labels


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
    set_labels(model, [model.config.id2label[i] for i in range(old.out_features)] + list(new_labels))


def set_labels(model: nn.Module, labels: list[str]) -> None:
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {name: i for i, name in enumerate(labels)}
    model.config.num_labels = len(labels)


class PrototypeGate(nn.Module):
    """The base classifier plus one calibrated gate per referenced label:

        p = (1 - sum_j g_j) * softmax(base logits) + sum_j g_j * onehot(label_j)
        g_j = sigmoid((cos(feature, prototype_j) - threshold_j) / temperature_j)

    returned as log p, so that softmax(output) == p: every caller (pipeline, flip TTA, API) treats
    it as logits. While no gate is open the base model's probabilities are unchanged."""

    def __init__(self, base: nn.Linear, num_labels: int, prototypes: torch.Tensor, thresholds: torch.Tensor,
                 temperatures: torch.Tensor, targets: torch.Tensor):
        super().__init__()
        self.base, self.num_labels = base, num_labels
        self.register_buffer("prototypes", prototypes.float())  # (gates, features), unit length
        self.register_buffer("thresholds", thresholds.float())
        self.register_buffer("temperatures", temperatures.float())
        self.register_buffer("targets", targets.long())  # each gate's output column

    def gates(self, features: torch.Tensor) -> torch.Tensor:
        similarity = F.normalize(features.float(), dim=-1) @ self.prototypes.T
        gates = torch.sigmoid((similarity - self.thresholds) / self.temperatures)
        return gates / gates.sum(-1, keepdim=True).clamp(min=1.0)  # several open gates share the mass

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        probabilities = F.pad(self.base(features).float().softmax(-1), (0, self.num_labels - self.base.out_features))
        gates = self.gates(features)
        mixed = (probabilities * (1 - gates.sum(-1, keepdim=True))).index_add(1, self.targets, gates)
        return mixed.clamp_min(1e-12).log()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: buffer.contiguous() for name, buffer in self.named_buffers()}


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
    if options.method == "prototype":
        adapted, steps_done, replay = model, 0, None
        details = _build_gates(model, base, refs, labels, options, progress)
    else:
        adapted, steps_done, replay = _build_peft(model, base, refs, labels, new_labels, options, progress)
        details = {}
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


def _build_peft(model: nn.Module, base: EmotionModel, refs: References, labels: list[str], new_labels: list[str],
                options: AdaptOptions, progress) -> tuple[PeftModel, int, FeatureReplay | None]:
    """The "lora" and "head" methods: a grown, imprinted classifier and a trained peft adapter."""
    base_labels = list(base.labels)
    grow_classifier(model, new_labels)
    label_ids = torch.tensor([labels.index(label) for label in refs.labels])
    clean = base.preprocessing(refs.crops)
    imprint(model, [labels.index(label) for label in new_labels],
            {int(i): clean[label_ids == i] for i in label_ids.unique()}, len(base_labels))
    peft_model = get_peft_model(model, LoraConfig(
        r=options.rank, lora_alpha=options.alpha, lora_dropout=0.0, target_modules=_target_modules(options),
        modules_to_save=None if options.method == "head" else ["classifier"]))
    stats = load_feature_stats(base) if options.replay_weight > 0 else None
    replay = FeatureReplay(stats) if stats is not None else None
    trainer = {"lora": _train_lora, "head": _train_head}[options.method]
    steps_done = trainer(peft_model, refs, label_ids, len(base_labels), base.preprocessing, replay, options, progress)
    return peft_model, steps_done, replay


def _label_views(grays: list[np.ndarray], count: int, preprocessing: Preprocessing, augment) -> torch.Tensor:
    """Each reference as it is and mirrored, then augmented views until `count`."""
    images = [view for gray in grays for view in (gray, gray[:, ::-1])]
    images += [augment(image=grays[i % len(grays)])["image"] for i in range(max(count - len(images), 0))]
    return preprocessing.normalize([preprocessing.resize(np.ascontiguousarray(image)) for image in images])


def _negatives(base: EmotionModel, options: AdaptOptions) -> tuple[torch.Tensor, list[str]] | None:
    """Unit-length real features of the base classes (the bank in feature_stats), or samples of their
    Gaussians, with their labels."""
    stats = load_feature_stats(base)
    if stats is None:
        return None
    if "bank_features" in stats:
        features, ids = stats["bank_features"].float(), stats["bank_labels"]
    else:  # statistics written before the bank existed
        logger.warning("%s: feature statistics without a bank; calibrating on Gaussian samples", base.name)
        generator = torch.Generator().manual_seed(options.seed)
        features, ids = FeatureReplay(stats).sample(4096, generator)
    return F.normalize(features, dim=-1), [base.labels[int(i)] for i in ids]


def calibrate_gate(views: torch.Tensor, negatives: torch.Tensor, false_positive_rate: float
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A label's prototype (the mean direction of its views' unit embeddings), the cosine threshold
    that `false_positive_rate` of the unit `negatives` pass, and the gate's temperature."""
    prototype = F.normalize(views.mean(0), dim=0)
    similarity = negatives @ prototype
    return prototype, torch.quantile(similarity, 1 - false_positive_rate), (similarity.std() / 8).clamp(min=1e-3)


def _build_gates(model: nn.Module, base: EmotionModel, refs: References, labels: list[str], options: AdaptOptions,
                 progress) -> dict:
    """Install a PrototypeGate on `model`: one prototype and calibrated threshold per referenced label."""
    augment = training_augmentation(options.augmentation_strength, options.seed)
    referenced = list(dict.fromkeys(refs.labels))
    views = {}
    for i, label in enumerate(referenced):
        grays = [base.preprocessing.gray(crop) for crop, name in zip(refs.crops, refs.labels) if name == label]
        views[label] = F.normalize(embeddings(model, _label_views(
            grays, options.views_per_label, base.preprocessing, augment)).float(), dim=-1)
        progress(0.8 * (i + 1) / len(referenced), f"embedded the references of {label!r}")
    bank = _negatives(base, options)
    prototypes, thresholds, temperatures, calibration = [], [], [], {}
    for label in referenced:
        negatives = [views[other] for other in referenced if other != label]
        if bank is not None:
            features, names = bank
            negatives.append(features[[name != label for name in names]])
        if sum(len(n) for n in negatives) < 20:
            raise AdaptError(
                f"cannot calibrate {label!r}: the prototype method needs faces of other classes, and {base.name} "
                f"has no {FEATURE_STATS_FILE} (write it with `python train.py feature-stats`) while the references "
                f"hold no other label; add references of another label, or use the lora method")
        prototype, threshold, temperature = calibrate_gate(views[label], torch.cat(negatives),
                                                           options.false_positive_rate)
        prototypes.append(prototype)
        thresholds.append(threshold)
        temperatures.append(temperature)
        calibration[label] = {
            "threshold": round(float(threshold), 4),
            "references_passing": round(float((views[label] @ prototype > threshold).float().mean()), 3),
        }
    model.classifier = PrototypeGate(model.classifier, len(labels), torch.stack(prototypes), torch.stack(thresholds),
                                     torch.stack(temperatures), torch.tensor([labels.index(x) for x in referenced]))
    set_labels(model, labels)
    return {"gates": calibration, "negatives": "feature bank" if bank is not None else "other references"}


class _BalancedViews:
    """Augmented views of the references, drawn class-balanced (k may differ per label, down to 1)."""

    def __init__(self, refs: References, label_ids: torch.Tensor, preprocessing: Preprocessing, strength: float,
                 seed: int):
        self.grays = [preprocessing.gray(crop) for crop in refs.crops]
        self.by_label = {int(i): np.flatnonzero(label_ids.numpy() == i) for i in label_ids.unique()}
        self.label_ids, self.preprocessing = label_ids, preprocessing
        self.augment = training_augmentation(strength, seed)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        picks = [int(np.random.choice(self.by_label[random.choice(list(self.by_label))])) for _ in range(size)]
        pixels = self.preprocessing.normalize(
            [self.preprocessing.resize(self.augment(image=self.grays[i])["image"]) for i in picks])
        return pixels, self.label_ids[picks]


def _replay_loss(model: PeftModel, replay: FeatureReplay | None, options: AdaptOptions) -> torch.Tensor:
    """Cross-entropy of the (adapted) classifier on features sampled from the base classes."""
    if replay is None:
        return torch.zeros(())
    features, labels = replay.sample(options.replay_batch)
    return options.replay_weight * F.cross_entropy(model.get_base_model().classifier(features), labels)


def _train_lora(model: PeftModel, refs: References, label_ids: torch.Tensor, num_base: int,
                preprocessing: Preprocessing, replay: FeatureReplay | None, options: AdaptOptions, progress) -> int:
    """Augmented steps of cross-entropy + replay + distillation; stops early once the references fit."""
    views = _BalancedViews(refs, label_ids, preprocessing, options.augmentation_strength, options.seed)
    head = [p for n, p in model.named_parameters() if p.requires_grad and "classifier" in n]
    lora = [p for n, p in model.named_parameters() if p.requires_grad and "classifier" not in n]
    optimizer = torch.optim.AdamW([{"params": lora, "lr": options.learning_rate},
                                   {"params": head, "lr": options.head_learning_rate}], weight_decay=0.0)
    temperature, fitted_steps = options.distillation_temperature, 0
    model.train()
    for step in range(1, options.steps + 1):
        pixels, targets = views.batch(options.batch_size)
        logits = model(pixel_values=pixels).logits
        loss = F.cross_entropy(logits, targets) + _replay_loss(model, replay, options)
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
        if fitted_steps >= 10:  # every reference right for 10 batches in a row; never a clock (reproducible)
            break
    return step


def _train_head(model: PeftModel, refs: References, label_ids: torch.Tensor, num_base: int,
                preprocessing: Preprocessing, replay: FeatureReplay | None, options: AdaptOptions, progress) -> int:
    """A last-layer fine-tune on frozen features: augmented views of the references (embedded once)
    against replayed base-class features. The backbone is untouched, so this is fast."""
    views = _BalancedViews(refs, label_ids, preprocessing, options.augmentation_strength, options.seed)
    view_count = max(256, 32 * len(views.by_label))
    with model.disable_adapter():
        batches = [views.batch(128) for _ in range(view_count // 128)]
        features = torch.cat([embeddings(model.get_base_model(), pixels) for pixels, _ in batches])
    targets = torch.cat([labels for _, labels in batches])
    classifier = model.get_base_model().classifier
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=options.head_learning_rate,
                                  weight_decay=0.0)
    steps = options.steps * 3  # feature-only steps cost next to nothing
    for step in range(1, steps + 1):
        picks = torch.randint(len(features), (options.batch_size,))
        loss = F.cross_entropy(classifier(features[picks]), targets[picks]) + _replay_loss(model, replay, options)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        progress(step / steps, f"step {step}/{steps}, loss {loss.item():.3f}")
    return steps


def save_adapter(model: nn.Module, metadata: dict, folder: str | Path) -> Path:
    """LoRA and head: the peft layout (adapter_config.json, adapter_model.safetensors); prototype: the
    gates' tensors in adapter_model.safetensors. Both with emotion_adapter.json."""
    from safetensors.torch import save_file
    folder = Path(folder)
    if isinstance(model, PeftModel):
        model.save_pretrained(folder)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        save_file(model.classifier.tensors(), str(folder / GATE_FILE), metadata={"format": "emotion_vit.gates"})
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
    else:
        grow_classifier(model, metadata["new_labels"])
        model = PeftModel.from_pretrained(model, str(folder))
    model.eval()
    return EmotionModel(model=model, preprocessing=base.preprocessing, labels=list(metadata["labels"]),
                        name=f"{base.name}+{metadata['name']}", sha256=base.sha256)


def adapter_size_bytes(folder: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())

