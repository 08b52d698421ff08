"""The loss and the Trainer: class weights, label smoothing, MixUp/CutMix, pair classes, distillation, reloads."""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoModelForImageClassification, Trainer

from .arguments import ModelArguments
from .metrics import EmotionMetrics, flat_metrics
from .model import keep_labels
from .transforms import BatchMixer, PairClasses

logger = logging.getLogger(__name__)


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
        # weights cover the real classes, then any pair classes: a model cut to its real classes uses the first
        weights = None if self.weights is None else self.weights[: logits.shape[-1]].to(logits.device, logits.dtype)
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

    def __init__(self, *args, mixer: BatchMixer | None = None, pair_classes: PairClasses | None = None,
                 teachers: list | None = None, model_args: ModelArguments | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.mixer = mixer
        self.pair_classes = pair_classes
        self.teachers = [teacher.eval().requires_grad_(False) for teacher in teachers or []]
        self.model_args = model_args

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            inputs = dict(inputs)
            for mix in filter(None, (self.pair_classes, self.mixer)):  # pair classes first: they need hard labels
                inputs["pixel_values"], inputs["labels"] = mix(inputs["pixel_values"], inputs["labels"])
        if not self.teachers or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        loss = (1 - self.model_args.distillation_alpha) * loss + \
            self.model_args.distillation_alpha * self._distillation_loss(outputs.logits, inputs["pixel_values"])
        return (loss, outputs) if return_outputs else loss

    @torch.no_grad()
    def _teacher_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The mean of the teachers' probabilities (and of each face's mirror image with teacher_flip_tta), as
        log-probabilities: logits of that mean, equal to one teacher's own logits up to a constant.

        The teachers run under the student's mixed precision: accelerate casts only the prepared model's
        forward, so without this a bf16 run's teachers ran in float32, 2.5x slower and half of each step."""
        views = 2 if self.model_args.teacher_flip_tta else 1
        batch = torch.cat([pixel_values, pixel_values.flip(-1)]) if views == 2 else pixel_values
        answers = []
        for teacher in self.teachers:
            teacher.to(pixel_values.device)
            size = teacher.config.image_size if hasattr(teacher.config, "image_size") else None
            seen = batch
            if isinstance(size, int) and size != batch.shape[-1]:  # same normalisation, other resolution
                seen = F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False)
            with self.accelerator.autocast():
                logits = teacher(pixel_values=seen).logits
            answers.append(logits.float().log_softmax(-1).view(views, len(pixel_values), -1))
        return torch.cat(answers).logsumexp(0) - math.log(len(answers) * views)

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
        # transformers loads the best checkpoint at the end of training without a barrier: under torchrun a
        # fast rank read a checkpoint that rank 0 was still writing ("Can't find a valid checkpoint").
        self.accelerator.wait_for_everyone()
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


def load_teachers(names: list[str] | None, labels: list[str]) -> list:
    """The distillation teachers, each answering in the student's labels and order. A teacher that knows more
    classes (a held-out-class student of a full model) is cut to the student's: its probabilities renormalised
    over them. What it learned from the other classes' labels still shapes its features, a weak leak that a
    held-out-class experiment should state."""
    teachers = []
    for name in names or []:
        teacher = AutoModelForImageClassification.from_pretrained(name)
        teacher_labels = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
        if not set(labels) <= set(teacher_labels):
            raise ValueError(f"teacher {name} has labels {teacher_labels}, not all of the student's {list(labels)}")
        if teacher_labels != list(labels):
            keep_labels(teacher, list(labels))
            logger.info("teacher %s answers in the student's %d of its %d labels", name, len(labels),
                        len(teacher_labels))
        logger.info("distilling from %s (%s)", name, type(teacher).__name__)
        teachers.append(teacher)
    return teachers


def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.stack([e["pixel_values"] for e in examples]),
            "labels": torch.stack([e["labels"] for e in examples])}


def make_compute_metrics(labels: list[str]):
    def compute_metrics(eval_prediction) -> dict[str, float]:
        metric = EmotionMetrics(labels=labels)
        # the real classes' outputs come first; any after them exist only while training (pair classes)
        predictions = np.argmax(eval_prediction.predictions[:, : len(labels)], axis=-1)
        return flat_metrics(metric.compute(predictions=predictions, references=eval_prediction.label_ids))
    return compute_metrics
