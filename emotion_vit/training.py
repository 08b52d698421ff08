"""Train an emotion classifier with the Hugging Face Trainer and write a hub-ready model folder.

The shape follows transformers' `run_image_classification.py`: dataclass arguments
(emotion_vit/arguments.py), `load_emotion_dataset` -> `set_transform`, a Trainer with metrics,
then a folder with safetensors weights, the label maps in config.json, the image processor
config, confusion matrices and a model card. Long runs go in chunks (emotion_vit/resume.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch
import transformers
from datasets import DatasetDict
from transformers import Trainer, TrainingArguments, set_seed

from .arguments import DataArguments, ModelArguments
from .averaging import WeightAverage
from .card import FLIP_TTA, write_model_card
from .data import describe, face_resolution, load_emotion_dataset
from .evaluation import score_split
from .features import compute_feature_stats, compute_unseen_bank, dataset_batches, save_feature_stats
from .hub import push_folder
from .metrics import EmotionMetrics, flat_metrics, save_confusion_matrix
from .model import (
    build_image_processor,
    build_model,
    fold_grayscale_into_model,
    keep_labels,
    load_emotion_model,
)
from .resume import (
    AugmentationState,
    ChunkBudget,
    ChunkLog,
    CompleteCheckpoints,
    last_complete_checkpoint,
)
from .trainer import EmotionLoss, EmotionTrainer, class_weights, collate, load_teachers, make_compute_metrics
from .transforms import (
    BatchMixer,
    DetectorFraming,
    PairClasses,
    Preprocessing,
    eval_transform,
    seed_augmentation,
    train_transform,
    training_augmentation,
)

logger = logging.getLogger(__name__)


def train(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments,
          recipe: dict | None = None) -> dict:
    """Train, pick the best checkpoint on validation, and write the model folder to output_dir.

    With `chunk_hours` set and spent before the last epoch, it stops after a checkpoint and
    returns {}: the same command resumes there.
    """
    recipe = recipe or {**asdict(model_args), **asdict(data_args)}
    push_to = take_over_push(training_args)
    dataset, labels, model, processor = start_run(model_args, data_args, training_args)
    data_summary = describe(dataset)
    logger.info("data:\n%s", data_summary)
    logger.info("model: %s, %.2fM parameters", type(model).__name__, sum(p.numel() for p in model.parameters()) / 1e6)
    pairs = pair_classes(data_args, model_args, labels)
    outputs = model.config.num_labels  # the labels, then any pair classes
    weights = class_weights(dataset["train"]["label"], len(labels), data_args.class_weighting)
    if weights is not None and outputs > len(labels):  # a pair class weighs as an average class
        weights = torch.cat([weights, weights.new_ones(outputs - len(labels))])
    loss = EmotionLoss(weights, training_args.label_smoothing_factor)
    augmentation_state = set_face_transforms(dataset, processor, data_args, training_args.seed)
    chunk = chunk_budget(training_args)
    averaging = WeightAverage(model, n) if (n := getattr(training_args, "average_last_epochs", None)) else None
    trainer = EmotionTrainer(
        model=model, args=training_args, train_dataset=dataset["train"], eval_dataset=dataset["validation"],
        data_collator=collate, processing_class=processor, compute_metrics=make_compute_metrics(labels),
        compute_loss_func=loss, mixer=BatchMixer(num_labels=outputs, prob=data_args.mix_prob), pair_classes=pairs,
        teachers=load_teachers(model_args.teacher_model, labels), model_args=model_args,
        callbacks=[augmentation_state, ChunkLog(), *(c for c in (chunk, averaging) if c)])

    train_from_last_checkpoint(trainer, training_args, saved_beside=(augmentation_state, averaging))
    if chunk and chunk.stopped_early:
        return {}

    weights_written = final_weights(trainer, training_args, averaging)
    if outputs > len(labels):
        keep_labels(trainer.model, labels)
    results = finish_model_folder(trainer, dataset, labels, data_summary, model_args, training_args, recipe,
                                  weights_written)
    if push_to and trainer.is_world_process_zero():
        push_folder(training_args.output_dir, push_to, private=bool(training_args.hub_private_repo),
                    token=training_args.hub_token)
    return results


def start_run(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments):
    """What every run starts from: its data (seeded), a model for the data's labels, and the processor saved with it.
    Returns (dataset, labels, model, processor)."""
    if not data_args.data:
        raise ValueError("no data given: set data in the config or pass --data PATH")
    if not torch.cuda.is_available():  # pinned memory only speeds copies to a GPU; on a CPU torch warns per loader
        training_args.dataloader_pin_memory = False
    set_seed(training_args.seed)
    dataset = load_training_data(data_args, training_args)
    labels = dataset["train"].features["label"].names
    pairs = pair_classes(data_args, model_args, labels)
    outputs = tuple(labels) + tuple(pairs.names(labels) if pairs else ())
    model = build_model(outputs, model_args.model_name_or_path, model_args.model_type,
                        model_args.model_config, model_args.image_size)
    processor = build_image_processor(model_args.image_size, model_args.image_mean, model_args.image_std,
                                      face_resolution(dataset["train"]))
    return dataset, labels, model, processor


def pair_classes(data_args: DataArguments, model_args: ModelArguments, labels: list[str]) -> PairClasses | None:
    """The class augmentation the recipe asks for (`pair_class_share`), or None."""
    if not data_args.pair_class_share:
        return None
    if model_args.teacher_model:
        raise ValueError("pair_class_share and teacher_model do not combine: the teachers have no pair classes")
    return PairClasses(num_labels=len(labels), share=data_args.pair_class_share)


def chunk_budget(training_args: TrainingArguments) -> ChunkBudget | None:
    hours = getattr(training_args, "chunk_hours", None)
    return ChunkBudget(hours) if hours else None


def train_from_last_checkpoint(trainer: Trainer, training_args: TrainingArguments, saved_beside=()) -> None:
    """Train, resuming from output_dir's last checkpoint if there is one, with the states the Trainer does not
    save itself (`saved_beside`: callbacks with `restore`, or None) read back from it."""
    trainer.add_callback(CompleteCheckpoints())  # last: it marks a checkpoint once the others have written theirs
    checkpoint = resume_point(training_args)
    if checkpoint:
        logger.info("resuming from %s (start afresh with another --output_dir)", checkpoint)
        for state in filter(None, saved_beside):
            state.restore(checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)


def set_face_transforms(dataset: DatasetDict, processor, data_args: DataArguments, seed: int) -> AugmentationState:
    """Augment the training faces (seeded) and preprocess every split as the saved processor will; returns the
    augmentation's state, which checkpoints keep."""
    augmentation = augmentation_for(data_args)
    seed_augmentation(augmentation, seed)
    preprocessing = Preprocessing.from_processor(processor)
    dataset["train"].set_transform(train_transform(preprocessing, augmentation))
    for split in ("validation", "test"):
        if split in dataset:
            dataset[split].set_transform(eval_transform(preprocessing))
    return AugmentationState(augmentation)


def augmentation_for(data_args: DataArguments):
    """The training faces' augmentation the data arguments ask for."""
    framing = (DetectorFraming.from_file(data_args.detector_framing, p=data_args.detector_framing_prob)
               if data_args.detector_framing else None)
    return training_augmentation(data_args.augmentation_strength, framing=framing, camera=data_args.poor_camera_prob)


def final_weights(trainer: Trainer, training_args: TrainingArguments, averaging: WeightAverage | None) -> str:
    """Put the averaged weights into the model where the recipe asks for them; which weights these are, for the card."""
    metric = f"validation {training_args.metric_for_best_model or 'loss'}"
    if averaging and averaging.apply():
        best = f"{trainer.state.best_metric:.2%}" if trainer.state.best_metric is not None else "not scored"
        return (f"the mean of the weights at the last {averaging.count} epoch ends "
                f"(the best single epoch's {metric}: {best})")
    if training_args.load_best_model_at_end:
        return f"the checkpoint with the best {metric}"
    return "those at the end of training"


def take_over_push(training_args: TrainingArguments) -> str | None:
    """The hub repo to push the finished folder to, with the Trainer's own push turned off: it would
    replace our model card."""
    push_to = training_args.hub_model_id if training_args.push_to_hub else None
    if training_args.push_to_hub and not push_to:
        raise ValueError("--push_to_hub needs --hub_model_id USER/NAME (or use --push-to-hub USER/NAME)")
    training_args.push_to_hub = False
    return push_to


def load_training_data(data_args: DataArguments, training_args: TrainingArguments) -> DatasetDict:
    """The data source's splits, optionally cut down for quick runs (the same subset for a given seed)."""
    # Several processes (torchrun / accelerate): the first extracts archives and fills the cache.
    with training_args.main_process_first(desc="loading data"):
        dataset = load_emotion_dataset(data_args.data, data_args)
    for split, limit in (("train", data_args.max_train_samples), ("validation", data_args.max_eval_samples)):
        if limit:
            dataset[split] = dataset[split].shuffle(seed=training_args.seed).select(
                range(min(limit, len(dataset[split]))))
    return dataset


def finish_model_folder(trainer: Trainer, dataset, labels: list[str], data_summary: str, model_args: ModelArguments,
                        training_args: TrainingArguments, recipe: dict, weights: str | None = None) -> dict:
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
    as_evaluated = eval_transform(Preprocessing.from_processor(trainer.processing_class))
    stats = compute_feature_stats(trainer.model, dataset_batches(dataset["train"].with_transform(as_evaluated)),
                                  len(labels))
    stats.update(compute_unseen_bank(trainer.model, dataset_batches(dataset["validation"].with_transform(
        as_evaluated)), len(labels)))  # what the adapters' build-time report measures a gate on
    save_feature_stats(stats, labels, output_dir)
    served = dataclasses.replace(load_emotion_model(output_dir), flip_tta=True)  # as the app serves it
    for split in list(results):
        results[split + FLIP_TTA] = score_split(served, dataset[split], desc=f"{split} with flip TTA")
    (output_dir / "eval_results.json").write_text(json.dumps(results, indent=1))
    write_model_card(output_dir, results=results, labels=labels, recipe=recipe, data_summary=data_summary,
                     base_model=model_args.model_name_or_path, model_type=trainer.model.config.model_type,
                     parameters=sum(p.numel() for p in trainer.model.parameters()),
                     transformers_version=transformers.__version__, weights=weights)
    return results


def resume_point(training_args: TrainingArguments) -> str | None:
    """The checkpoint to resume from, the same for every process: rank 0's view of the folder (under
    torchrun, rank 1 once found a checkpoint folder that was still being written and failed to resume from it)."""
    checkpoint = [training_args.resume_from_checkpoint or last_complete_checkpoint(training_args.output_dir)]
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.broadcast_object_list(checkpoint, src=0)
    return checkpoint[0]

