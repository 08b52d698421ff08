"""Training that spans sessions: exact resume, and chunks that end at an epoch boundary.

A Trainer checkpoint holds the model, optimizer, scheduler, step and the python, numpy and torch
random states, and the Trainer's sampler is seeded per epoch, so the data order comes back too.
What it does not know is albumentations' own generator, which draws every augmentation: it is
saved beside each checkpoint and restored on resume (DataLoader workers reseed it from torch's
per-worker seed instead, which the Trainer's saved torch state brings back; see
`transforms.train_transform`). A run stopped and resumed so ends with the same weights as one that
ran straight through (tests/test_training.py checks it bit for bit).
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import albumentations as A
import numpy as np
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

AUGMENTATION_STATE = "augmentation_rng.json"
CHECKPOINT_COMPLETE = "checkpoint_complete.json"  # written last into a checkpoint folder: nothing is missing
CHUNK_LOG = "chunks.jsonl"  # one line per invocation of a run: what it trained and how it scored


class AugmentationState(TrainerCallback):
    """Saves the augmentation's generators into each checkpoint; `restore` reads them back."""

    def __init__(self, augmentation: A.Compose):
        self.augmentation = augmentation

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            python_state = self.augmentation.py_random.getstate()
            (folder / AUGMENTATION_STATE).write_text(json.dumps({
                "numpy": self.augmentation.random_generator.bit_generator.state,
                "python": [python_state[0], list(python_state[1]), python_state[2]],
            }))

    def restore(self, checkpoint: str | Path) -> bool:
        path = Path(checkpoint) / AUGMENTATION_STATE
        if not path.is_file():
            logger.warning("%s has no %s: augmentations after the resume differ from an unbroken run",
                           checkpoint, AUGMENTATION_STATE)
            return False
        saved = json.loads(path.read_text())
        generator = np.random.default_rng()
        generator.bit_generator.state = saved["numpy"]
        python = random.Random()
        version, internal, gauss = saved["python"]
        python.setstate((version, tuple(internal), gauss))
        self.augmentation.set_random_state(generator, python)
        return True


class CompleteCheckpoints(TrainerCallback):
    """Marks each checkpoint folder once everything is in it. Added after every other callback, so its
    `on_save` runs last: a run killed while saving (a session ending) leaves a folder without the mark,
    and `last_complete_checkpoint` resumes from the one before instead of failing on a half-written file."""

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            (folder / CHECKPOINT_COMPLETE).write_text(json.dumps({"global_step": state.global_step}))


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest checkpoint-N folder with nothing missing. Runs from before the mark existed: the newest
    with the Trainer's last file, trainer_state.json."""
    folders = sorted((path for path in Path(output_dir).glob("checkpoint-*")
                      if path.is_dir() and path.name.removeprefix("checkpoint-").isdigit()),
                     key=lambda path: int(path.name.removeprefix("checkpoint-")), reverse=True)
    marked = any((folder / CHECKPOINT_COMPLETE).is_file() for folder in folders)
    for folder in folders:
        if (folder / (CHECKPOINT_COMPLETE if marked else "trainer_state.json")).is_file():
            return str(folder)
        logger.warning("%s was not written to the end (stopped while saving): resuming from an earlier one", folder)
    return None


class ChunkBudget(TrainerCallback):
    """Ends training at the first epoch end after `hours`, saving a checkpoint to resume from."""

    def __init__(self, hours: float):
        self.seconds = hours * 3600
        self.started = time.monotonic()
        self.stopped_early = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()

    def on_epoch_end(self, args, state, control, **kwargs):
        if time.monotonic() - self.started >= self.seconds and state.global_step < state.max_steps:
            control.should_training_stop = True
            control.should_save = True
            self.stopped_early = True
            logger.info("chunk budget of %.2f h spent at epoch %.0f of %d (step %d of %d): run the same "
                        "command again to resume", self.seconds / 3600, state.epoch, args.num_train_epochs,
                        state.global_step, state.max_steps)


class ChunkLog(TrainerCallback):
    """Appends one line per invocation to output_dir/chunks.jsonl: epochs, steps, hours, latest and best scores."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.started, self.first_epoch, self.first_step = time.time(), state.epoch or 0.0, state.global_step

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        evaluations = [entry for entry in state.log_history if "eval_loss" in entry]
        last = evaluations[-1] if evaluations else {}
        line = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "hours": round((time.time() - self.started) / 3600, 3),
            "epochs": [round(self.first_epoch, 2), round(state.epoch or 0.0, 2), args.num_train_epochs],
            "steps": [self.first_step, state.global_step, state.max_steps],
            "eval_accuracy": last.get("eval_accuracy"),
            "eval_loss": last.get("eval_loss"),  # a pretraining run's only score
            "best_metric": state.best_metric,
            "best_checkpoint": state.best_model_checkpoint,
        }
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(args.output_dir) / CHUNK_LOG, "a") as log:
            log.write(json.dumps(line) + "\n")
