"""Weight averaging: the model written is the mean of the weights at the last N epoch ends.

Checkpoint averaging (as timm's `avg_checkpoints.py`, or SWA over the tail of a schedule) lands in a
flatter region than any one epoch's weights, for nothing at inference: on the long FER2013 run the
mean of six consecutive epochs scored above every one of them (docs/benchmarks.md). PVTv2 has no
BatchNorm, so the mean needs no statistics recomputed.

The running sum is saved into each checkpoint and read back on resume, so a run in chunks averages
the same weights as one that ran straight through.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

WEIGHT_SUM = "weight_average.safetensors"  # in each checkpoint: the running sum and how many epochs it holds


class WeightAverage(TrainerCallback):
    """Sums the model's floating-point weights at each of the last `epochs` epoch ends."""

    def __init__(self, model: nn.Module, epochs: int):
        if epochs < 1:
            raise ValueError(f"average_last_epochs must be at least 1, not {epochs}")
        self.model, self.epochs = model, epochs
        self.total: dict[str, torch.Tensor] = {}
        self.count = 0

    def on_epoch_end(self, args, state, control, **kwargs):
        if round(state.epoch or 0) <= args.num_train_epochs - self.epochs:
            return
        for name, tensor in self.model.state_dict().items():
            if tensor.is_floating_point():
                value = tensor.detach().float().cpu()
                self.total[name] = self.total[name] + value if name in self.total else value.clone()
        self.count += 1

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir() and self.count:
            save_file(self.total, str(folder / WEIGHT_SUM), metadata={"count": str(self.count)})

    def restore(self, checkpoint: str | Path) -> None:
        path = Path(checkpoint) / WEIGHT_SUM
        if path.is_file():
            with safe_open(str(path), "pt") as saved:
                self.count = int(saved.metadata()["count"])
            self.total = load_file(str(path))

    def apply(self) -> int:
        """Put the mean into the model; the number of epochs it averages (0: nothing summed, model kept)."""
        if not self.count:
            return 0
        state = self.model.state_dict()
        with torch.no_grad():
            for name, total in self.total.items():
                state[name].copy_((total / self.count).to(state[name].dtype))
        logger.info("weights: the mean of the last %d epoch ends", self.count)
        return self.count
