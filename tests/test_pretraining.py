"""Masked-image-modelling pretraining (emotion_vit/pretraining.py): the masking, the loss, and the folder it writes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from emotion_vit.card import write_model_card
from emotion_vit.config import parse_training_args
from emotion_vit.model import build_model
from emotion_vit.pretraining import MaskedImageModeling, pretrain

TINY_PVT = {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "num_attention_heads": [1, 1, 1, 1],
            "mlp_ratios": [2, 2, 2, 2]}


def tiny_mim(**kwargs) -> MaskedImageModeling:
    torch.manual_seed(0)
    return MaskedImageModeling(build_model(model_type="pvt_v2", model_config=TINY_PVT, image_size=32), **kwargs)


def test_the_mask_token_replaces_exactly_the_masked_units():
    model = tiny_mim(mask_ratio=0.5, mask_unit=8)
    mask = model.random_mask(3, 32, 32)
    assert mask.shape == (3, 4, 4) and mask.flatten(1).sum(1).tolist() == [8, 8, 8]
    embedded = []
    model.classifier.base_model.encoder.layers[0].patch_embedding.register_forward_hook(
        lambda module, inputs, output: embedded.append(output[0].detach()))
    pixels = torch.randn(3, 3, 32, 32)
    model.reconstruct(pixels, mask)
    model.classifier.base_model(pixels)  # no mask outside `reconstruct`
    masked, clean = embedded
    token_mask = mask.repeat_interleave(2, 1).repeat_interleave(2, 2).flatten(1)  # 8 px units over 4 px tokens
    assert torch.equal(masked[~token_mask], clean[~token_mask])
    assert torch.equal(masked[token_mask], model.mask_token[0].expand(int(token_mask.sum()), -1).detach())


def test_the_loss_counts_only_masked_pixels():
    model = tiny_mim()
    pixels = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)
    loss = model(pixels)["loss"]
    torch.manual_seed(1)
    mask = model.random_mask(2, 32, 32)
    reconstruction = model.reconstruct(pixels, mask)
    hidden = mask.repeat_interleave(8, 1).repeat_interleave(8, 2)[:, None].expand_as(pixels)
    assert torch.allclose(loss, (reconstruction - pixels).abs()[hidden].mean(), atol=1e-6)
    assert not torch.allclose(loss, (reconstruction - pixels).abs().mean(), atol=1e-4)


def test_other_architectures_are_refused():
    with pytest.raises(ValueError, match="written for pvt_v2"):
        MaskedImageModeling(build_model(model_type="vit", model_config={"hidden_size": 16, "num_hidden_layers": 1,
                                                                         "num_attention_heads": 1,
                                                                         "intermediate_size": 16}))


def test_pretraining_learns_and_writes_a_backbone_a_recipe_starts_from(learnable_zip, tmp_path):
    output_dir = tmp_path / "mim"
    args = parse_training_args([
        "--objective", "masked_image_modeling", "--model_type", "pvt_v2", "--image_size", "32",
        "--model_config", json.dumps(TINY_PVT),
        "--data", str(learnable_zip), "--output_dir", str(output_dir), "--num_train_epochs", "8",
        "--per_device_train_batch_size", "16", "--learning_rate", "3e-3", "--augmentation_strength", "0",
        "--eval_strategy", "epoch", "--save_strategy", "no", "--report_to", "none",
        "--remove_unused_columns", "false", "--seed", "0"])
    losses = pretrain(*args)["validation"]["reconstruction_loss"]
    assert len(losses) == 8 and losses[-1] < 0.8 * losses[0]  # it learns to fill in the masked squares
    card = (output_dir / "README.md").read_text()
    assert "head is untrained" in card and "\n## Recipe\n" in card and "objective: masked_image_modeling" in card
    # a classifier trained from this backbone lists the pretraining's recipe first in its own card
    classifier_card = write_model_card(
        tmp_path / "classifier", results={}, labels=["a", "b"], recipe={"num_train_epochs": 3},
        data_summary="train: 2 images", base_model=str(output_dir), model_type="pvt_v2", parameters=1000,
        transformers_version="5").read_text()
    recipes = classifier_card.split("\n## Recipe\n", 1)[1]
    assert f"First, `{output_dir}`" in recipes
    assert recipes.index("objective: masked_image_modeling") < recipes.index("num_train_epochs: 3")
    started = build_model(model_name_or_path=str(output_dir))
    saved = load_file(output_dir / "model.safetensors")
    backbone = {name: value for name, value in started.state_dict().items() if name.startswith("pvt_v2.")}
    assert backbone and all(torch.equal(value, saved[name]) for name, value in backbone.items())
