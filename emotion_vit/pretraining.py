"""Self-supervised pretraining of the backbone on the training faces: masked-image modelling (SimMIM).

The backbone issue's in-domain self-supervised lever ("How to train ViT on small-scale datasets":
a transformer trained from scratch on a small data set gains from first learning the images
themselves). SimMIM (Xie et al., 2022) as its paper does it for a hierarchical transformer (Swin):
square units of `mask_unit` pixels are masked, a share `mask_ratio` of them per image; the first
stage's tokens of a masked unit are replaced by one learned mask token right after the patch
embedding; a 1x1 convolution and a pixel shuffle read the pixels back from the last stage; the loss
is the L1 distance on the masked pixels only. No labels are used.

    python train.py --config configs/fer2013-pvt-mim.yaml                  # writes runs/fer2013-pvt-mim
    python train.py --config configs/fer2013-pvt-long.yaml --model_name_or_path runs/fer2013-pvt-mim

The folder written is a classifier whose head is untrained: a starting point for a recipe, not a model
to serve. Written for PVTv2 (the shipped architecture); other model types are refused.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainingArguments

from .arguments import DataArguments, ModelArguments
from .card import write_backbone_card
from .resume import ChunkLog
from .trainer import collate
from .training import chunk_budget, set_face_transforms, start_run, train_from_last_checkpoint

logger = logging.getLogger(__name__)


class MaskedImageModeling(nn.Module):
    """A PVTv2 classifier's backbone with SimMIM's mask token and one-layer pixel decoder; forward gives the loss."""

    def __init__(self, classifier: PreTrainedModel, mask_ratio: float = 0.6, mask_unit: int = 8):
        super().__init__()
        config = classifier.config
        if config.model_type != "pvt_v2":
            raise ValueError(f"masked-image-modelling pretraining is written for pvt_v2, not {config.model_type}")
        self.token_stride = config.strides[0]
        if mask_unit % self.token_stride or not 0 < mask_ratio < 1:
            raise ValueError(f"mask_unit must be a multiple of {self.token_stride} px and mask_ratio between 0 and 1")
        self.classifier, self.mask_ratio, self.mask_unit = classifier, mask_ratio, mask_unit
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.hidden_sizes[0]))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        output_stride = math.prod(config.strides)
        self.decoder = nn.Sequential(nn.Conv2d(config.hidden_sizes[-1], output_stride ** 2 * config.num_channels, 1),
                                     nn.PixelShuffle(output_stride))
        self._token_mask: torch.Tensor | None = None  # set for the length of one forward
        classifier.base_model.encoder.layers[0].patch_embedding.register_forward_hook(self._mask_tokens)

    def _mask_tokens(self, module, inputs, output):
        if self._token_mask is None:
            return output
        embeddings, height, width = output
        masked = self._token_mask.flatten(1)[..., None]  # (batch, tokens, 1), row-major as the embeddings
        return torch.where(masked, self.mask_token.to(embeddings.dtype), embeddings), height, width

    def random_mask(self, batch: int, height: int, width: int, device=None) -> torch.Tensor:
        """(batch, height / unit, width / unit) booleans, exactly round(ratio * units) of them True per image."""
        rows, cols = height // self.mask_unit, width // self.mask_unit
        if rows * self.mask_unit != height or cols * self.mask_unit != width:
            raise ValueError(f"the image side must be a multiple of the mask unit, {self.mask_unit} px")
        order = torch.rand(batch, rows * cols, device=device).argsort(dim=1)
        mask = torch.zeros(batch, rows * cols, dtype=torch.bool, device=device)
        mask.scatter_(1, order[:, :round(self.mask_ratio * rows * cols)], True)
        return mask.view(batch, rows, cols)

    def reconstruct(self, pixel_values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The decoder's image for `pixel_values` with the units of `mask` hidden from the backbone."""
        scale = self.mask_unit // self.token_stride
        self._token_mask = mask.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
        try:
            features = self.classifier.base_model(pixel_values).last_hidden_state  # (batch, channels, h, w)
        finally:
            self._token_mask = None
        return self.decoder(features)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> dict:  # labels: unused
        mask = self.random_mask(len(pixel_values), *pixel_values.shape[-2:], device=pixel_values.device)
        reconstruction = self.reconstruct(pixel_values, mask)
        pixel_mask = mask.repeat_interleave(self.mask_unit, 1).repeat_interleave(self.mask_unit, 2)[:, None]
        error = (reconstruction.float() - pixel_values.float()).abs() * pixel_mask
        return {"loss": error.sum() / (pixel_mask.sum() * pixel_values.shape[1]).clamp(min=1)}


def pretrain(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments,
             recipe: dict | None = None) -> dict:
    """Pretrain the recipe's backbone by masked-image modelling and write it as a classifier folder (head untrained).
    Chunks and resume work as for `training.train`; returns the last validation reconstruction loss ({} when a
    chunk stops early)."""
    training_args.prediction_loss_only = True  # evaluation scores the reconstruction, keeps no images
    dataset, _, classifier, processor = start_run(model_args, data_args, training_args)
    model = MaskedImageModeling(classifier, model_args.mask_ratio, model_args.mask_unit)
    augmentation_state = set_face_transforms(dataset, processor, data_args, training_args.seed)
    chunk = chunk_budget(training_args)
    trainer = Trainer(model=model, args=training_args, train_dataset=dataset["train"],
                      eval_dataset=dataset["validation"], data_collator=collate,
                      callbacks=[augmentation_state, ChunkLog(), *([chunk] if chunk else [])])
    train_from_last_checkpoint(trainer, training_args, saved_beside=(augmentation_state,))
    if chunk and chunk.stopped_early:
        return {}
    per_epoch = [entry["eval_loss"] for entry in trainer.state.log_history if "eval_loss" in entry]
    output_dir = Path(training_args.output_dir)
    classifier.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    write_backbone_card(output_dir, model_class=type(classifier).__name__, faces=len(dataset["train"]),
                        losses=per_epoch, recipe=recipe or {})
    logger.info("pretrained backbone written to %s (validation reconstruction loss %s)", output_dir,
                f"{per_epoch[-1]:.4f}" if per_epoch else "not evaluated")
    return {"validation": {"reconstruction_loss": per_epoch}}
