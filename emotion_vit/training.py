"""Train an emotion classifier with the Hugging Face Trainer and write a hub-ready model folder.

The shape follows transformers' `run_image_classification.py`: dataclass arguments (ours
plus `TrainingArguments`), `load_emotion_dataset` -> `set_transform`, a Trainer with metrics,
then a folder with safetensors weights, the label maps in config.json, the image processor
config, confusion matrices and a model card.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoModelForImageClassification, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from .adapt import compute_feature_stats, dataset_batches, save_feature_stats
from .card import write_model_card
from .data import DataOptions, describe, load_emotion_dataset
from .hub import push_folder
from .metrics import EmotionMetrics, flat_metrics, save_confusion_matrix
from .model import build_image_processor, build_model, fold_grayscale_into_model
from .transforms import (
    BatchMixer,
    DetectorFraming,
    Preprocessing,
    eval_transform,
    train_transform,
    training_augmentation,
)

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    """Which model to train: a checkpoint to fine-tune, or a new one built from a config."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Hub id or local folder of an image classifier to fine-tune; "
            "unset: build a new model from model_type/model_config."
        },
    )
    model_type: str = field(
        default="vit", metadata={"help": "transformers model type for a new model (vit, pvt_v2, deit, ...)."}
    )
    model_config: dict | str | None = field(default=None, metadata={
        "help": "Config values for a new model (JSON object), e.g. {\"hidden_size\": 192, \"num_hidden_layers\": 6}."})
    image_size: int = field(
        default=48, metadata={"help": "Input resolution; faces are resized to image_size x image_size."}
    )
    image_mean: float = field(default=0.5, metadata={"help": "Normalisation mean (same for all channels)."})
    image_std: float = field(default=0.5, metadata={"help": "Normalisation std (same for all channels)."})
    teacher_model: str | None = field(default=None, metadata={
        "help": "A trained classifier with the same labels (e.g. a CNN) to distil from, DeiT-style."})
    distillation: str = field(
        default="hard",
        metadata={
            "help": "hard: learn the teacher's top class (DeiT's better variant); "
            "soft: its temperature-scaled probabilities.",
            "choices": ["hard", "soft"],
        },
    )
    distillation_alpha: float = field(
        default=0.5, metadata={"help": "Weight of the distillation term (the rest: the labels)."}
    )
    distillation_temperature: float = field(default=2.0, metadata={"help": "Temperature of soft distillation."})

    def __post_init__(self):
        if isinstance(self.model_config, str):
            self.model_config = json.loads(self.model_config)
        self.model_config = self.model_config or {}


@dataclass
class DataArguments:
    """Where the faces come from and how they are augmented and weighted."""

    data: str | None = field(default=None, metadata={
        "help": "Image-folder tree or archive (.zip/.tar), fer2013.csv, or a hub data set name."})
    image_column: str | None = field(default=None, metadata={"help": "Hub data sets: the image column."})
    label_column: str | None = field(default=None, metadata={"help": "Hub data sets: the label column."})
    hub_config: str | None = field(default=None, metadata={"help": "Hub data sets: the configuration name."})
    skip_bad_images: bool = field(
        default=False, metadata={"help": "Skip and count unreadable images instead of stopping."}
    )
    validation_fraction: float = field(
        default=0.1, metadata={"help": "Stratified validation share when the source has no validation split."}
    )
    exclude_labels: list[str] = field(
        default_factory=list, metadata={"help": "Classes to leave out (held-out-class studies)."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only this many training images (quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use only this many validation images (quick runs)."}
    )
    augmentation_strength: float = field(
        default=1.0, metadata={"help": "Scales the augmentation ranges; 0 turns augmentation off."}
    )
    mix_prob: float = field(default=0.0, metadata={"help": "Probability that a batch is mixed by MixUp or CutMix."})
    detector_framing: str | None = field(default=None, metadata={
        "help": "A crop-geometry fit (bench/crop_geometry.py --output): re-frame training faces with its measured "
                "detector jitter, as the live crop sees them."})
    detector_framing_prob: float = field(default=0.5, metadata={"help": "Share of training faces re-framed so."})
    class_weighting: str = field(default="sqrt_inverse", metadata={
        "help": "Loss weights against class imbalance: none, sqrt_inverse (1/sqrt(freq)) or inverse (1/freq).",
        "choices": ["none", "sqrt_inverse", "inverse"]})

    def options(self, seed: int) -> DataOptions:
        return DataOptions(image_column=self.image_column, label_column=self.label_column,
                           skip_bad_images=self.skip_bad_images, validation_fraction=self.validation_fraction,
                           seed=seed, exclude_labels=list(self.exclude_labels), hub_config=self.hub_config)


def class_weights(labels: list[int], num_labels: int, scheme: str) -> torch.Tensor | None:
    """Loss weights from training-set frequencies, normalised to mean 1 (so the LR means the same)."""
    if scheme == "none":
        return None
    counts = Counter(labels)
    freq = torch.tensor([max(counts.get(i, 0), 1) for i in range(num_labels)], dtype=torch.float)
    weights = freq.pow(-0.5) if scheme == "sqrt_inverse" else freq.reciprocal()
    return weights * num_labels / weights.sum()


@dataclass
class EmotionLoss:
    """Cross-entropy with class weights and label smoothing; also takes MixUp/CutMix soft labels."""

    weights: torch.Tensor | None = None
    label_smoothing: float = 0.0

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        weights = None if self.weights is None else self.weights.to(logits.device, logits.dtype)
        if labels.dim() == 1:
            return F.cross_entropy(logits, labels, weight=weights, label_smoothing=self.label_smoothing)
        targets = labels * (1 - self.label_smoothing) + self.label_smoothing / logits.shape[-1]
        per_class = -targets * F.log_softmax(logits, dim=-1)
        if weights is not None:  # weight each example by its (mixed) class, as weighted CE does
            per_example = (per_class * weights).sum(-1)
            return per_example.sum() / (labels * weights).sum()
        return per_class.sum(-1).mean()


class EmotionTrainer(Trainer):
    """The Trainer, with MixUp/CutMix in training steps and checkpoint reloads through `from_pretrained`.

    Mixing happens in `compute_loss` while the model is in training mode: the data collator
    also serves evaluation, which must see the real images and labels.

    transformers 5 renamed some models' modules (ViT: `encoder.layer.N.attention.attention.query`
    became `layers.N.attention.q_proj`) but still saves the old names. The Trainer reloads
    checkpoints (resume, load_best_model_at_end) with a plain `load_state_dict`, which warns
    about unexpected keys and leaves those layers as they were (transformers issues #43701,
    #48805). `from_pretrained` applies the renaming, so weights are read through it.
    """

    def __init__(self, *args, mixer: BatchMixer | None = None, teacher=None, model_args: ModelArguments | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.mixer = mixer
        self.teacher = teacher.eval().requires_grad_(False) if teacher is not None else None
        self.model_args = model_args

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.mixer is not None and model.training:
            inputs = dict(inputs)
            inputs["pixel_values"], inputs["labels"] = self.mixer(inputs["pixel_values"], inputs["labels"])
        if self.teacher is None or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        loss = (1 - self.model_args.distillation_alpha) * loss + \
            self.model_args.distillation_alpha * self._distillation_loss(outputs.logits, inputs["pixel_values"])
        return (loss, outputs) if return_outputs else loss

    @torch.no_grad()
    def _teacher_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self.teacher.to(pixel_values.device)
        size = self.teacher.config.image_size if hasattr(self.teacher.config, "image_size") else None
        if isinstance(size, int) and size != pixel_values.shape[-1]:  # same normalisation, other resolution
            pixel_values = F.interpolate(pixel_values, size=(size, size), mode="bilinear", align_corners=False)
        return self.teacher(pixel_values=pixel_values).logits.float()

    def _distillation_loss(self, logits: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        teacher = self._teacher_logits(pixel_values)
        if self.model_args.distillation == "hard":
            return F.cross_entropy(logits, teacher.argmax(-1))
        temperature = self.model_args.distillation_temperature
        return F.kl_div(F.log_softmax(logits / temperature, -1), F.log_softmax(teacher / temperature, -1),
                        log_target=True, reduction="batchmean") * temperature ** 2

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        if not self._reload_weights(resume_from_checkpoint, model or self.model):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        logger.info("loading the best model from %s (%s %.4f)", self.state.best_model_checkpoint,
                    self.args.metric_for_best_model, self.state.best_metric)
        if not self._reload_weights(self.state.best_model_checkpoint, self.model):
            super()._load_best_model()

    @staticmethod
    def _reload_weights(checkpoint: str, model) -> bool:
        if (
            not isinstance(model, transformers.PreTrainedModel)
            or not (Path(checkpoint) / "model.safetensors").is_file()
        ):
            return False  # adapters, sharded or distributed checkpoints: the Trainer's own path
        saved = type(model).from_pretrained(checkpoint, config=model.config)
        model.load_state_dict(saved.state_dict(), strict=True)
        return True


def load_teacher(name: str | None, labels: list[str]):
    """The distillation teacher: a classifier whose labels are the student's, in the same order."""
    if not name:
        return None
    teacher = AutoModelForImageClassification.from_pretrained(name)
    teacher_labels = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
    if teacher_labels != list(labels):
        raise ValueError(f"teacher {name} has labels {teacher_labels}, the student {list(labels)}")
    logger.info("distilling from %s (%s)", name, type(teacher).__name__)
    return teacher


def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.stack([e["pixel_values"] for e in examples]),
            "labels": torch.stack([e["labels"] for e in examples])}


def make_compute_metrics(labels: list[str]):
    def compute_metrics(eval_prediction) -> dict[str, float]:
        metric = EmotionMetrics(labels=labels)
        predictions = np.argmax(eval_prediction.predictions, axis=-1)
        return flat_metrics(metric.compute(predictions=predictions, references=eval_prediction.label_ids))
    return compute_metrics


def train(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments,
          recipe: dict | None = None) -> dict:
    """Train, pick the best checkpoint on validation, and write the model folder to output_dir."""
    if not data_args.data:
        raise ValueError("no data given: set data in the config or pass --data PATH")
    recipe = recipe or {**asdict(model_args), **asdict(data_args)}
    # The Trainer's own push would replace our model card; the finished folder is pushed instead.
    push_to = training_args.hub_model_id if training_args.push_to_hub else None
    if training_args.push_to_hub and not push_to:
        raise ValueError("--push_to_hub needs --hub_model_id USER/NAME (or use --push-to-hub USER/NAME)")
    training_args.push_to_hub = False
    if not torch.cuda.is_available():  # pinned memory only speeds copies to a GPU; on a CPU torch warns per loader
        training_args.dataloader_pin_memory = False
    set_seed(training_args.seed)
    # Several processes (torchrun / accelerate): the first extracts archives and fills the cache.
    with training_args.main_process_first(desc="loading data"):
        dataset = load_emotion_dataset(data_args.data, data_args.options(training_args.seed))
    if data_args.max_train_samples:
        dataset["train"] = dataset["train"].shuffle(seed=training_args.seed).select(
            range(min(data_args.max_train_samples, len(dataset["train"]))))
    if data_args.max_eval_samples:
        dataset["validation"] = dataset["validation"].shuffle(seed=training_args.seed).select(
            range(min(data_args.max_eval_samples, len(dataset["validation"]))))
    data_summary = describe(dataset)
    logger.info("data:\n%s", data_summary)
    labels = dataset["train"].features["label"].names

    model = build_model(tuple(labels), model_args.model_name_or_path, model_args.model_type,
                        model_args.model_config, model_args.image_size)
    processor = build_image_processor(model_args.image_size, model_args.image_mean, model_args.image_std)
    preprocessing = Preprocessing.from_processor(processor)
    logger.info("model: %s, %.2fM parameters", type(model).__name__, sum(p.numel() for p in model.parameters()) / 1e6)

    loss = EmotionLoss(class_weights(dataset["train"]["label"], len(labels), data_args.class_weighting),
                       training_args.label_smoothing_factor)
    framing = DetectorFraming.from_file(data_args.detector_framing, p=data_args.detector_framing_prob) \
        if data_args.detector_framing else None
    dataset["train"].set_transform(train_transform(preprocessing, training_augmentation(
        data_args.augmentation_strength, framing=framing)))
    for split in ("validation", "test"):
        if split in dataset:
            dataset[split].set_transform(eval_transform(preprocessing))

    trainer = EmotionTrainer(
        model=model, args=training_args, train_dataset=dataset["train"], eval_dataset=dataset["validation"],
        data_collator=collate, processing_class=processor, compute_metrics=make_compute_metrics(labels),
        compute_loss_func=loss, mixer=BatchMixer(num_labels=len(labels), prob=data_args.mix_prob),
        teacher=load_teacher(model_args.teacher_model, labels), model_args=model_args)

    checkpoint = training_args.resume_from_checkpoint or last_checkpoint(training_args.output_dir)
    if checkpoint:
        logger.info("resuming from %s (start afresh with another --output_dir)", checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)

    results = finish_model_folder(trainer, dataset, labels, data_summary, model_args, training_args, recipe)
    if push_to and trainer.is_world_process_zero():
        push_folder(training_args.output_dir, push_to, private=bool(training_args.hub_private_repo),
                    token=training_args.hub_token)
    return results


def finish_model_folder(trainer: Trainer, dataset, labels: list[str], data_summary: str, model_args: ModelArguments,
                        training_args: TrainingArguments, recipe: dict) -> dict:
    """Score the best model, fold grayscale into it, and save weights, processor, plots and card."""
    output_dir = Path(training_args.output_dir)
    results = {}
    for split in ("validation", "test"):
        if split in dataset:
            prediction = trainer.predict(dataset[split], metric_key_prefix=split)
            metric = EmotionMetrics(labels=labels)
            results[split] = metric.compute(
                predictions=prediction.predictions.argmax(-1), references=prediction.label_ids
            )
            if trainer.is_world_process_zero():
                save_confusion_matrix(results[split], labels, output_dir, stem=f"confusion_matrix_{split}")
            logger.info("%s: %s", split, json.dumps(flat_metrics(results[split])))

    fold_grayscale_into_model(trainer.model)
    trainer.save_model(str(output_dir))  # weights (safetensors), config with labels, processor config
    if not trainer.is_world_process_zero():
        return results
    # Class feature statistics: the few-shot adapters replay them as the base classes' examples.
    stats = compute_feature_stats(trainer.model, dataset_batches(dataset["train"].with_transform(
        eval_transform(Preprocessing.from_processor(trainer.processing_class)))), len(labels))
    save_feature_stats(stats, labels, output_dir)
    (output_dir / "eval_results.json").write_text(json.dumps(results, indent=1))
    write_model_card(output_dir, results=results, labels=labels, recipe=recipe, data_summary=data_summary,
                     base_model=model_args.model_name_or_path, model_type=trainer.model.config.model_type,
                     parameters=sum(p.numel() for p in trainer.model.parameters()),
                     transformers_version=transformers.__version__)
    return results


def last_checkpoint(output_dir: str) -> str | None:
    """The newest checkpoint-N folder in output_dir: an interrupted run picks up from there."""
    return get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
