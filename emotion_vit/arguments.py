"""The training run's arguments: which model, which data, and the Trainer's own with a chunk budget.

Recipes (configs/*.yaml) and command-line flags fill these dataclasses (emotion_vit/config.py);
each setting is declared here once, with its help text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from transformers import TrainingArguments

from .data import DataOptions

MASKED_IMAGE_MODELING = "masked_image_modeling"  # the objective of emotion_vit/pretraining.py


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
        "help": "Config values for a new model (JSON object), e.g. {\"hidden_size\": 192, \"num_hidden_layers\": 6}; "
                "with model_name_or_path, values that override its config (e.g. {\"drop_path_rate\": 0.1})."})
    image_size: int = field(
        default=48, metadata={"help": "Input resolution; faces are resized to image_size x image_size."}
    )
    image_mean: float = field(default=0.5, metadata={"help": "Normalisation mean (same for all channels)."})
    image_std: float = field(default=0.5, metadata={"help": "Normalisation std (same for all channels)."})
    objective: str = field(default="classification", metadata={
        "help": f"classification: learn the labels; {MASKED_IMAGE_MODELING}: pretrain the backbone without labels "
                "(SimMIM; emotion_vit/pretraining.py), a starting point for a classification recipe.",
        "choices": ["classification", MASKED_IMAGE_MODELING]})
    mask_ratio: float = field(default=0.6, metadata={"help": "masked_image_modeling: share of the image masked."})
    mask_unit: int = field(default=8, metadata={
        "help": "masked_image_modeling: side of a masked square, in pixels of the model's input."})
    teacher_model: list[str] | None = field(default=None, metadata={
        "help": "A trained classifier with the same labels or more (e.g. a CNN) to distil from, DeiT-style; several: "
                "an ensemble, the mean of their probabilities."})
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
    teacher_flip_tta: bool = field(default=False, metadata={
        "help": "The teacher answers for each face and its mirror image, averaged (as the app serves a model): "
                "the student learns to give in one view what the teacher gives in two."})

    def __post_init__(self):
        if isinstance(self.teacher_model, str):  # a recipe's `teacher_model: DIR`
            self.teacher_model = [self.teacher_model]
        if isinstance(self.model_config, str):
            self.model_config = json.loads(self.model_config)
        self.model_config = self.model_config or {}


@dataclass
class DataArguments(DataOptions):
    """Where the faces come from (with `DataOptions`' reading options) and how they are augmented and weighted."""

    data: str | None = field(default=None, metadata={
        "help": "Image-folder tree or archive (.zip/.tar), fer2013.csv, or a hub data set name."})
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
    pair_class_share: float = field(default=0.0, metadata={
        "help": "Blends of two faces of different classes added to each training batch, as a share of it, each "
                "pair of classes a class of its own while training (ALICE's class augmentation, "
                "emotion_vit.transforms.PairClasses): features with room for classes the model never saw. "
                "The model written keeps only the real classes."})
    detector_framing: str | None = field(default=None, metadata={
        "help": "A crop-geometry fit (bench/crop_geometry.py --output): re-frame training faces with its measured "
                "detector jitter, as the live crop sees them."})
    detector_framing_prob: float = field(default=0.5, metadata={"help": "Share of training faces re-framed so."})
    poor_camera_prob: float = field(default=0.0, metadata={
        "help": "Share of training faces degraded as a poor webcam would: fewer pixels, dim, noise, JPEG "
                "(emotion_vit.transforms.poor_camera)."})
    class_weighting: str = field(default="sqrt_inverse", metadata={
        "help": "Loss weights against class imbalance: none, sqrt_inverse (1/sqrt(freq)) or inverse (1/freq).",
        "choices": ["none", "sqrt_inverse", "inverse"]})


@dataclass
class EmotionTrainingArguments(TrainingArguments):
    """transformers' `TrainingArguments` plus a time budget per invocation, for runs that span sessions."""

    average_last_epochs: int | None = field(default=None, metadata={
        "help": "Write the mean of the weights at the last N epoch ends instead of one checkpoint's "
                "(checkpoint averaging; the best single checkpoint's score goes in the model card)."})
    chunk_hours: float | None = field(default=None, metadata={
        "help": "Stop at the first epoch end after this many hours, with a checkpoint; the same command "
                "resumes there exactly (model, optimizer, schedule, random states, data order)."})
