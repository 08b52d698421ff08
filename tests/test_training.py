"""Training end to end on tiny data: model folder, pipeline(), evaluation, recipes, resume, hub push."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, pattern_face
from safetensors.torch import load_file
from transformers import pipeline

from emotion_vit.config import parse_training_args
from emotion_vit.evaluation import evaluate_model
from emotion_vit.labels import EMOTIONS
from emotion_vit.model import build_model, fold_grayscale_into_model
from emotion_vit.resume import AUGMENTATION_STATE, CHUNK_LOG
from emotion_vit.trainer import EmotionLoss, EmotionTrainer, class_weights
from emotion_vit.training import train

TINY = str(REPO / "configs" / "tiny.yaml")
TINY_VIT = {
    "patch_size": 12,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


def run_tiny(data: Path, output_dir: Path, *flags: str) -> dict:
    model_args, data_args, training_args, recipe = parse_training_args(
        ["--config", TINY, "--data", str(data), "--output_dir", str(output_dir), *flags])
    return train(model_args, data_args, training_args, recipe)


@pytest.fixture(scope="module")
def trained(learnable_zip, tmp_path_factory) -> tuple[Path, dict]:
    """A tiny ViT trained for 6 epochs on the pattern faces (a few seconds)."""
    output_dir = tmp_path_factory.mktemp("run") / "tiny"
    results = run_tiny(learnable_zip, output_dir, "--num_train_epochs", "6", "--learning_rate", "3e-3",
                       "--augmentation_strength", "0.5")
    return output_dir, results


def test_training_writes_a_hub_ready_model_folder(trained):
    output_dir, results = trained
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md",
                 "confusion_matrix_validation.png", "confusion_matrix_validation.json", "eval_results.json"):
        assert (output_dir / name).is_file(), name
    config = json.loads((output_dir / "config.json").read_text())
    assert config["id2label"] == {str(i): name for i, name in enumerate(EMOTIONS)}
    card = (output_dir / "README.md").read_text()
    for needle in ("library_name: transformers", "pipeline_tag: image-classification", "fer2013",
                   "type: accuracy", "model_type: vit", "Do not use this model to make or support decisions"):
        assert needle in card, needle
    confusion = json.loads((output_dir / "confusion_matrix_validation.json").read_text())
    assert np.asarray(confusion["counts"]).sum() == results["validation"]["num_examples"] == 56


def test_tiny_model_learns_the_patterns(trained):
    _, results = trained
    assert results["validation"]["accuracy"] >= 0.5  # chance is 1/7


def test_pipeline_classifies_a_face_crop_with_no_project_code(trained):
    output_dir, _ = trained
    classify = pipeline("image-classification", model=str(output_dir))
    predictions = classify(pattern_face(EMOTIONS.index("happy"), 7).convert("RGB").resize((120, 120)), top_k=7)
    assert sorted(p["label"] for p in predictions) == sorted(EMOTIONS)
    assert abs(sum(p["score"] for p in predictions) - 1) < 1e-4


def test_evaluation_function_and_command(trained, learnable_zip):
    output_dir, results = trained
    scores = evaluate_model(output_dir, str(learnable_zip), split="validation")
    assert scores["num_examples"] == 56
    assert abs(scores["accuracy"] - results["validation"]["accuracy"]) < 0.05  # same preprocessing, same data
    command = [sys.executable, "train.py", "evaluate", "--model", str(output_dir), "--data", str(learnable_zip),
               "--split", "validation", "--output-dir", str(output_dir / "eval")]
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "accuracy" in out.stdout and "macro-F1" in out.stdout and "surprise" in out.stdout
    assert (output_dir / "eval" / "confusion_matrix_validation.png").is_file()
    missing = subprocess.run(command[:-2] + ["--split", "test"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "split 'test' not in" in missing.stderr


def test_evaluation_leaves_the_callers_model_as_it_was(trained, learnable_zip):
    from emotion_vit.model import load_emotion_model
    model = load_emotion_model(trained[0])
    with_tta = evaluate_model(model, str(learnable_zip), split="validation", flip_tta=True)
    assert with_tta["flip_tta"] is True and model.flip_tta is False  # the app's setting is not the caller's
    model.flip_tta = True
    assert evaluate_model(model, str(learnable_zip), split="validation")["flip_tta"] is False and model.flip_tta


def test_hub_models_without_a_revision_are_told_apart_by_their_weights():
    from emotion_vit.model import build_model, hub_weights_id
    config = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
              "patch_size": 8}
    first, second = (build_model(model_type="vit", model_config=config) for _ in range(2))
    assert hub_weights_id(first) != hub_weights_id(second)  # two random inits: never one shared "null"
    assert len(hub_weights_id(first)) == 64 and hub_weights_id(first) == hub_weights_id(first)
    first.config._commit_hash = "abc123"
    assert hub_weights_id(first) == '"abc123"'


def test_recipe_values_and_command_line_overrides(tmp_path):
    model_args, data_args, training_args, recipe = parse_training_args(
        ["--config", TINY, "--learning-rate", "5e-4", "--data", "x.zip", "--exclude_labels", "surprise"])
    assert training_args.learning_rate == 5e-4  # flag beats recipe (1e-3)
    assert training_args.per_device_train_batch_size == 16  # from the recipe
    assert model_args.model_config["hidden_size"] == 32 and data_args.exclude_labels == ["surprise"]
    assert recipe["learning_rate"] == 5e-4 and recipe["data"] == "x.zip"
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rat: 0.1\n")
    with pytest.raises(ValueError, match="learning_rat"):
        parse_training_args(["--config", str(bad)])
    with pytest.raises(FileNotFoundError):
        parse_training_args(["--config", str(tmp_path / "missing.yaml")])


def test_a_run_in_chunks_ends_with_the_weights_of_an_unbroken_run(learnable_zip, tmp_path, caplog):
    """Exact resume: model, optimizer, schedule, data order, MixUp's and albumentations' random draws."""
    flags = ["--num_train_epochs", "3", "--max_train_samples", "64", "--mix_prob", "0.5", "--lr_scheduler_type",
             "cosine", "--augmentation_strength", "1.0", "--load_best_model_at_end", "false"]
    run_tiny(learnable_zip, tmp_path / "unbroken", *flags)
    caplog.set_level("INFO")
    chunked = tmp_path / "chunked"
    assert run_tiny(learnable_zip, chunked, *flags, "--chunk_hours", "1e-9") == {}  # stops after epoch 1
    assert "chunk budget" in caplog.text and not (chunked / "model.safetensors").exists()
    assert sorted(p.name for p in chunked.glob("checkpoint-*")) == ["checkpoint-4"]
    assert (chunked / "checkpoint-4" / AUGMENTATION_STATE).is_file()
    run_tiny(learnable_zip, chunked, *flags, "--chunk_hours", "1e-9")  # epoch 2
    results = run_tiny(learnable_zip, chunked, *flags, "--chunk_hours", "1e-9")  # epoch 3: the end
    assert "resuming from" in caplog.text and "validation" in results
    chunks = [json.loads(line) for line in (chunked / CHUNK_LOG).read_text().splitlines()]
    assert [chunk["steps"][:2] for chunk in chunks] == [[0, 4], [4, 8], [8, 12]]
    unbroken = load_file(str(tmp_path / "unbroken" / "checkpoint-12" / "model.safetensors"))
    resumed = load_file(str(chunked / "checkpoint-12" / "model.safetensors"))
    assert unbroken.keys() == resumed.keys()
    for name, tensor in unbroken.items():
        assert torch.equal(tensor, resumed[name]), name

    # The check can fail: without the augmentation's saved generator the resumed run draws other views.
    forgetful = tmp_path / "forgetful"
    run_tiny(learnable_zip, forgetful, *flags, "--chunk_hours", "1e-9")
    (forgetful / "checkpoint-4" / AUGMENTATION_STATE).unlink()
    run_tiny(learnable_zip, forgetful, *flags)
    drifted = load_file(str(forgetful / "checkpoint-12" / "model.safetensors"))
    assert any(not torch.equal(tensor, drifted[name]) for name, tensor in unbroken.items())


def test_checkpoint_reload_restores_every_weight(tmp_path):
    """transformers 5 saves ViT under legacy names; a plain load_state_dict would miss them."""
    saved = build_model(model_type="vit", model_config=TINY_VIT)
    saved.save_pretrained(tmp_path)
    fresh = build_model(model_type="vit", model_config=TINY_VIT)
    assert EmotionTrainer._reload_weights(str(tmp_path), fresh)
    for name, tensor in saved.state_dict().items():
        assert torch.equal(tensor, fresh.state_dict()[name]), name


def test_grayscale_fold_makes_colour_input_equal_its_luminance():
    torch.manual_seed(0)
    model = build_model(model_type="vit", model_config=TINY_VIT).eval()
    gray = torch.rand(2, 1, 48, 48).expand(-1, 3, -1, -1)
    before = model(pixel_values=gray).logits
    fold_grayscale_into_model(model)
    assert torch.allclose(model(pixel_values=gray).logits, before, atol=1e-5)  # grayscale: unchanged
    colour = torch.rand(2, 3, 48, 48)
    luma = (0.299 * colour[:, 0] + 0.587 * colour[:, 1] + 0.114 * colour[:, 2]).unsqueeze(1).expand(-1, 3, -1, -1)
    assert torch.allclose(model(pixel_values=colour).logits, model(pixel_values=luma).logits, atol=1e-5)


def test_class_weights_and_loss_with_soft_labels():
    weights = class_weights([0] * 90 + [1] * 10, 2, "sqrt_inverse")
    assert weights[1] > weights[0] and abs(weights.mean().item() - 1) < 1e-6
    assert class_weights([0, 1], 2, "none") is None
    logits = torch.randn(4, 2)
    hard = torch.tensor([0, 1, 1, 0])
    loss = EmotionLoss(weights)
    outputs = {"logits": logits}
    soft = torch.nn.functional.one_hot(hard, 2).float()
    assert torch.allclose(loss(outputs, hard), loss(outputs, soft), atol=1e-6)  # one-hot soft == hard


def test_push_to_hub_uploads_the_finished_folder(trained, monkeypatch):
    """Up to the network call: the repo is created and the folder uploaded with the right files."""
    from huggingface_hub import HfApi

    from emotion_vit.hub import push_folder
    calls = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.setdefault("create", (repo_id, kw)))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.setdefault("upload", kw))
    output_dir, _ = trained
    push_folder(output_dir, "someone/emotion-vit-test", private=True)
    assert calls["create"] == ("someone/emotion-vit-test", {"private": True, "exist_ok": True})
    assert calls["upload"]["folder_path"] == str(output_dir) and "*.safetensors" in calls["upload"]["allow_patterns"]
    _, _, training_args, _ = parse_training_args(["--config", TINY, "--push-to-hub", "someone/emotion-vit-test"])
    assert training_args.push_to_hub and training_args.hub_model_id == "someone/emotion-vit-test"
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        push_folder(output_dir / "eval_results.json", "someone/x")
    # An adapter of the default method (prototype gates: no peft adapter_config.json) is pushed too.
    adapter = output_dir.parent / "gates"
    adapter.mkdir(exist_ok=True)
    (adapter / "emotion_adapter.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    calls.clear()
    push_folder(adapter, "someone/gates")
    assert calls["upload"]["folder_path"] == str(adapter)


def test_mixup_cutmix_in_training_steps_only(learnable_zip, tmp_path):
    """Every training batch mixed; evaluation still sees hard labels (it failed when mixing sat in the collator)."""
    results = run_tiny(learnable_zip, tmp_path / "mixed", "--mix_prob", "1.0", "--max_train_samples", "64")
    assert results["validation"]["num_examples"] == 56


def test_unchanged_code_trains_under_torchrun(learnable_zip, tmp_path):
    """Two processes (gloo on CPU stands in for GPUs): data loads once, rank 0 writes the folder."""
    output_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py",
               "--config", TINY, "--data", str(learnable_zip), "--output_dir", str(output_dir), "--ddp_backend", "gloo",
               "--max_train_samples", "64", "--disable_tqdm", "true"]
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, "\n".join(line for line in out.stderr.splitlines() if "rank" in line)[-6000:]
    assert (output_dir / "model.safetensors").is_file() and (output_dir / "README.md").is_file()
    state = json.loads((output_dir / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2  # 64 images / (2 processes x 16 per device)


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_distillation_from_a_teacher(trained, learnable_zip, tmp_path, caplog, kind):
    teacher_dir, teacher_results = trained
    caplog.set_level("INFO")
    results = run_tiny(learnable_zip, tmp_path / kind, "--teacher_model", str(teacher_dir), "--distillation", kind,
                       "--num_train_epochs", "6", "--learning_rate", "3e-3", "--augmentation_strength", "0.5")
    assert "distilling from" in caplog.text
    assert results["validation"]["accuracy"] >= 0.5  # the teacher (>= 0.5) guides it; chance is 1/7


def test_a_teacher_with_other_labels_is_refused(trained, learnable_zip, tmp_path):
    teacher_dir, _ = trained
    with pytest.raises(ValueError, match="teacher .* has labels"):
        run_tiny(learnable_zip, tmp_path / "x", "--teacher_model", str(teacher_dir), "--exclude_labels", "surprise")
