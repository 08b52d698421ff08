"""Training end to end on tiny data: model folder, pipeline(), evaluation, recipes, resume, hub push."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, pattern_face
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification, TrainingArguments, pipeline

from emotion_vit.arguments import ModelArguments
from emotion_vit.averaging import WEIGHT_SUM
from emotion_vit.config import parse_training_args
from emotion_vit.evaluation import evaluate_model
from emotion_vit.labels import EMOTIONS
from emotion_vit.model import build_model, fold_grayscale_into_model
from emotion_vit.resume import AUGMENTATION_STATE, CHECKPOINT_COMPLETE, CHUNK_LOG, last_complete_checkpoint
from emotion_vit.trainer import EmotionLoss, EmotionTrainer, class_weights, load_teachers
from emotion_vit.training import train
from emotion_vit.transforms import BatchMixer, PairClasses

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


class RecordingLoss(EmotionLoss):
    """The training loss, keeping a copy of the labels of every call."""

    def __init__(self):
        super().__init__()
        self.labels: list[torch.Tensor] = []

    def __call__(self, outputs, labels, num_items_in_batch=None):
        self.labels.append(labels.detach().clone())
        return super().__call__(outputs, labels, num_items_in_batch)


def loss_trainer(output_dir: Path, bf16: bool = False,
                 **kwargs) -> tuple[EmotionTrainer, RecordingLoss, list[torch.Tensor]]:
    """An EmotionTrainer around a fresh tiny ViT, to call `compute_loss` directly: with the loss's labels
    and the model's pixel values of every call."""
    loss, pixels = RecordingLoss(), []
    model = build_model(model_type="vit", model_config=TINY_VIT)
    model.register_forward_pre_hook(lambda _, args, kw: pixels.append(kw["pixel_values"].detach().clone()),
                                    with_kwargs=True)
    trainer = EmotionTrainer(model=model, args=TrainingArguments(output_dir=str(output_dir), report_to="none",
                                                                 use_cpu=True, bf16=bf16), compute_loss_func=loss,
                             **kwargs)
    return trainer, loss, pixels


def face_batch(n: int = 8) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.randn(n, 3, 48, 48), "labels": torch.arange(n) % len(EMOTIONS)}


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
    # A held-out-class model is scored on the classes it has: the excluded ones leave the data.
    held_out = subprocess.run(command[:-1] + [str(output_dir / "held-out"), "--exclude-labels", "surprise", "disgust"],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
    assert held_out.returncode == 0, held_out.stderr[-2000:]
    saved = json.loads((output_dir / "held-out" / "eval_validation.json").read_text())
    confusion = np.asarray(saved["confusion_matrix"])
    surprise, disgust = EMOTIONS.index("surprise"), EMOTIONS.index("disgust")
    assert confusion[[surprise, disgust]].sum() == 0 and 0 < confusion.sum() < 56


def test_card_reports_one_view_and_flip_tta_each_with_its_command(trained, learnable_zip):
    output_dir, results = trained
    saved = json.loads((output_dir / "eval_results.json").read_text())
    assert set(saved) == {"validation", "validation_flip_tta"}
    served = evaluate_model(output_dir, str(learnable_zip), split="validation", flip_tta=True)
    assert saved["validation_flip_tta"]["confusion_matrix"] == served["confusion_matrix"]  # what --flip-tta gives
    card = (output_dir / "README.md").read_text()
    one_view = f"| {results['validation']['accuracy']:.2%} |"
    tta = f"| flip TTA | {served['accuracy']:.2%} |"
    assert one_view in card and tta in card
    assert f"--model {output_dir.name} --data {learnable_zip} --split validation --flip-tta" in card
    assert card.count("value: ") == 2  # the hub metadata: one view's accuracy and macro-F1, not the TTA row


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


@pytest.mark.parametrize("recipe", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_every_shipped_recipe_parses(recipe):
    """A typo in a recipe that trains for hours would otherwise surface only when it runs."""
    _, _, training_args, values = parse_training_args(["--config", str(REPO / "configs" / recipe)])
    assert values and training_args.output_dir


def test_a_recipe_starts_from_its_base_and_declares_only_what_it_changes(tmp_path):
    (tmp_path / "variants").mkdir()
    (tmp_path / "long.yaml").write_text(f"base: {Path(TINY).resolve()}\nnum_train_epochs: 150\nseed: 42\n")
    (tmp_path / "variants" / "distil.yaml").write_text("base: ../long.yaml\nseed: 48\ndistillation: soft\n")
    model_args, _, training_args, recipe = parse_training_args(
        ["--config", str(tmp_path / "variants" / "distil.yaml"), "--data", "x.zip"])
    assert training_args.seed == 48 and training_args.num_train_epochs == 150  # its own value, then its base's
    assert training_args.per_device_train_batch_size == 16  # from the base's base
    assert model_args.distillation == "soft" and "base" not in recipe and recipe["num_train_epochs"] == 150
    (tmp_path / "long.yaml").write_text("base: variants/distil.yaml\n")
    with pytest.raises(ValueError, match="each other's base"):
        parse_training_args(["--config", str(tmp_path / "variants" / "distil.yaml")])


def test_a_bf16_recipe_trains_on_a_cpu_and_saves_float32_weights(learnable_zip, tmp_path):
    """bf16 is the Trainer's CPU autocast when no GPU is there (1.7x the images/s on AVX512-BF16 cores)."""
    _, _, training_args, _ = parse_training_args(["--config", TINY, "--bf16", "true"])
    assert training_args.bf16 and (training_args.use_cpu or torch.cuda.is_available())
    results = run_tiny(learnable_zip, tmp_path / "bf16", "--bf16", "true", "--num_train_epochs", "6",
                       "--learning_rate", "3e-3", "--augmentation_strength", "0.5")
    assert results["validation"]["accuracy"] >= 0.5  # the float32 run's bar (test_tiny_model_learns_the_patterns)
    weights = load_file(tmp_path / "bf16" / "model.safetensors")
    assert {tensor.dtype for tensor in weights.values()} == {torch.float32}


def test_a_run_in_chunks_ends_with_the_weights_of_an_unbroken_run(learnable_zip, tmp_path, caplog):
    """Exact resume: model, optimizer, schedule, data order, MixUp's and albumentations' random draws."""
    flags = ["--num_train_epochs", "3", "--max_train_samples", "64", "--mix_prob", "0.5", "--lr_scheduler_type",
             "cosine", "--augmentation_strength", "1.0", "--load_best_model_at_end", "false",
             "--average_last_epochs", "2"]
    run_tiny(learnable_zip, tmp_path / "unbroken", *flags)
    caplog.set_level("INFO")
    chunked = tmp_path / "chunked"
    assert run_tiny(learnable_zip, chunked, *flags, "--chunk_hours", "1e-9") == {}  # stops after epoch 1
    assert "chunk budget" in caplog.text and not (chunked / "model.safetensors").exists()
    assert sorted(p.name for p in chunked.glob("checkpoint-*")) == ["checkpoint-4"]
    assert (chunked / "checkpoint-4" / AUGMENTATION_STATE).is_file()
    run_tiny(learnable_zip, chunked, *flags, "--chunk_hours", "1e-9")  # epoch 2
    assert all((folder / CHECKPOINT_COMPLETE).is_file() for folder in chunked.glob("checkpoint-*"))
    # a session ended while epoch 3's checkpoint was being written: the resume goes back to epoch 2's
    killed = chunked / "checkpoint-12"
    killed.mkdir()
    (killed / "model.safetensors").write_bytes(b"\x00" * 10)
    (killed / "trainer_state.json").write_text("{}")
    results = run_tiny(learnable_zip, chunked, *flags, "--chunk_hours", "1e-9")  # epoch 3: the end
    assert "resuming from" in caplog.text and "validation" in results
    assert "checkpoint-12 was not written to the end" in caplog.text
    chunks = [json.loads(line) for line in (chunked / CHUNK_LOG).read_text().splitlines()]
    assert [chunk["steps"][:2] for chunk in chunks] == [[0, 4], [4, 8], [8, 12]]
    unbroken = load_file(str(tmp_path / "unbroken" / "checkpoint-12" / "model.safetensors"))
    resumed = load_file(str(chunked / "checkpoint-12" / "model.safetensors"))
    assert unbroken.keys() == resumed.keys()
    for name, tensor in unbroken.items():
        assert torch.equal(tensor, resumed[name]), name
    assert (chunked / "checkpoint-8" / WEIGHT_SUM).is_file()  # epoch 2's weights, summed before the break
    averaged = load_file(str(tmp_path / "unbroken" / "model.safetensors"))
    averaged_in_chunks = load_file(str(chunked / "model.safetensors"))
    for name, tensor in averaged.items():
        assert torch.equal(tensor, averaged_in_chunks[name]), name

    # The check can fail: without the augmentation's saved generator the resumed run draws other views.
    forgetful = tmp_path / "forgetful"
    run_tiny(learnable_zip, forgetful, *flags, "--chunk_hours", "1e-9")
    (forgetful / "checkpoint-4" / AUGMENTATION_STATE).unlink()
    run_tiny(learnable_zip, forgetful, *flags)
    drifted = load_file(str(forgetful / "checkpoint-12" / "model.safetensors"))
    assert any(not torch.equal(tensor, drifted[name]) for name, tensor in unbroken.items())


def test_resume_takes_the_newest_whole_checkpoint(tmp_path):
    def checkpoint(step: int, *files: str) -> None:
        (tmp_path / f"checkpoint-{step}").mkdir()
        for name in files:
            (tmp_path / f"checkpoint-{step}" / name).write_text("{}")

    assert last_complete_checkpoint(tmp_path / "absent") is None
    checkpoint(225, "trainer_state.json")
    checkpoint(450, "trainer_state.json")
    checkpoint(675, "model.safetensors")  # killed before the Trainer's last file
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-450")  # a run from before the mark
    checkpoint(900, "trainer_state.json", CHECKPOINT_COMPLETE)
    checkpoint(1125, "trainer_state.json")  # killed before the callbacks' files and the mark
    (tmp_path / "checkpoint-x").mkdir()
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-900")


def test_average_last_epochs_writes_the_mean_of_those_epochs_weights(learnable_zip, tmp_path):
    output_dir = tmp_path / "averaged"
    results = run_tiny(learnable_zip, output_dir, "--num_train_epochs", "3", "--max_train_samples", "64",
                       "--average_last_epochs", "2", "--save_total_limit", "5")
    epochs = [load_file(str(output_dir / f"checkpoint-{step}" / "model.safetensors")) for step in (8, 12)]
    written = load_file(str(output_dir / "model.safetensors"))
    patch_conv = next(name for name, t in written.items() if t.dim() == 4)  # grayscale-folded: compare channel sums
    for name, tensor in written.items():
        mean = (epochs[0][name] + epochs[1][name]) / 2
        if name == patch_conv:
            tensor, mean = tensor.sum(1), mean.sum(1)
        assert torch.allclose(tensor, mean, atol=1e-6), name
    assert not torch.equal(written["classifier.weight"], epochs[1]["classifier.weight"])  # not the last epoch's
    card = (output_dir / "README.md").read_text()
    assert "Weights: the mean of the weights at the last 2 epoch ends" in card
    assert results["validation"]["num_examples"] == 56  # scored after averaging, on the whole split


def test_checkpoint_reload_restores_every_weight(tmp_path):
    """transformers 5 saves ViT under legacy names; a plain load_state_dict would miss them."""
    saved = build_model(model_type="vit", model_config=TINY_VIT)
    saved.save_pretrained(tmp_path)
    fresh = build_model(model_type="vit", model_config=TINY_VIT)
    assert EmotionTrainer._reload_weights(str(tmp_path), fresh)
    for name, tensor in saved.state_dict().items():
        assert torch.equal(tensor, fresh.state_dict()[name]), name


def test_model_config_overrides_a_pretrained_models_config(tmp_path):
    """A fine-tune can change what the checkpoint's config fixes at construction, e.g. stochastic depth."""
    build_model(model_type="vit", model_config=TINY_VIT).save_pretrained(tmp_path)
    tuned = build_model(model_name_or_path=str(tmp_path), model_config={"hidden_dropout_prob": 0.2})
    assert tuned.config.hidden_dropout_prob == 0.2
    assert build_model(model_name_or_path=str(tmp_path)).config.hidden_dropout_prob == 0.0  # as saved


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


def test_compute_loss_mixes_training_batches_only(tmp_path):
    """MixUp/CutMix reach the loss and the model in training mode; evaluation sees the real batch."""
    torch.manual_seed(0)
    np.random.seed(0)
    trainer, loss, pixels = loss_trainer(tmp_path, mixer=BatchMixer(num_labels=len(EMOTIONS), prob=1.0))
    batch = face_batch()
    hard = batch["labels"]
    trainer.model.train()
    for _ in range(6):  # MixUp or CutMix, a coin flip each
        trainer.compute_loss(trainer.model, dict(batch))
    assert len(loss.labels) == len(pixels) == 6
    mixed_rows = 0
    for soft, seen in zip(loss.labels, pixels):
        assert soft.shape == (8, len(EMOTIONS)) and soft.is_floating_point()
        assert torch.allclose(soft.sum(-1), torch.ones(8))
        # a mixture of this batch's labels: the partner permutation keeps each class's total mass
        assert torch.allclose(soft.sum(0), F.one_hot(hard, len(EMOTIONS)).float().sum(0), atol=1e-5)
        mixed = soft.max(-1).values < 0.99  # not one-hot (MixUp's Beta(0.2, 0.2) is often near 0 or 1)
        changed = (seen != batch["pixel_values"]).flatten(1).any(1)
        assert changed[mixed].all()  # a mixed label comes with a mixed image
        mixed_rows += int(mixed.sum())
    assert mixed_rows >= 4  # 6 to 48 rows over 6 batches for 200 seeds
    assert torch.equal(batch["labels"], hard)  # the caller's batch is left as it was

    loss.labels.clear()
    pixels.clear()
    trainer.model.eval()
    with torch.no_grad():
        for _ in range(6):
            trainer.compute_loss(trainer.model, dict(batch), return_outputs=True)
    assert len(loss.labels) == len(pixels) == 6
    for labels, seen in zip(loss.labels, pixels):
        assert torch.equal(labels, hard) and torch.equal(seen, batch["pixel_values"])


def test_mix_prob_zero_never_mixes(tmp_path):
    torch.manual_seed(0)
    trainer, loss, pixels = loss_trainer(tmp_path, mixer=BatchMixer(num_labels=len(EMOTIONS), prob=0.0))
    batch = face_batch()
    trainer.model.train()
    for _ in range(20):
        trainer.compute_loss(trainer.model, dict(batch))
    assert len(loss.labels) == len(pixels) == 20
    for labels, seen in zip(loss.labels, pixels):
        assert torch.equal(labels, batch["labels"]) and torch.equal(seen, batch["pixel_values"])


def losses_seen(monkeypatch, with_width: bool = False) -> dict[bool, list]:
    """Spy on a real run's loss: model.training -> the labels of each call (with the logits' width if asked)."""
    seen = {True: [], False: []}
    training = [None]
    compute_loss, emotion_loss = EmotionTrainer.compute_loss, EmotionLoss.__call__

    def spy_compute_loss(self, model, inputs, *args, **kwargs):
        training[0] = model.training
        return compute_loss(self, model, inputs, *args, **kwargs)

    def spy_loss(self, outputs, labels, num_items_in_batch=None):
        labels_seen = labels.detach().clone()
        seen[training[0]].append((labels_seen, outputs.logits.shape[-1]) if with_width else labels_seen)
        return emotion_loss(self, outputs, labels, num_items_in_batch)

    monkeypatch.setattr(EmotionTrainer, "compute_loss", spy_compute_loss)
    monkeypatch.setattr(EmotionLoss, "__call__", spy_loss)
    return seen


@pytest.mark.parametrize("mix_prob", [1.0, 0.0])
def test_mixup_cutmix_in_training_steps_only(learnable_zip, tmp_path, monkeypatch, mix_prob):
    """A real run: training steps' loss gets soft labels (every batch at mix_prob 1, none at 0), evaluation
    hard ones (it failed when mixing sat in the collator, which evaluation shares)."""
    seen = losses_seen(monkeypatch)
    results = run_tiny(learnable_zip, tmp_path / "mixed", "--mix_prob", str(mix_prob), "--max_train_samples", "64")
    assert results["validation"]["num_examples"] == 56
    assert len(seen[True]) == 4  # 64 images, 16 a step
    if mix_prob:
        assert all(labels.dim() == 2 and torch.allclose(labels.sum(-1), torch.ones(len(labels)))
                   for labels in seen[True])
        assert any((labels.max(-1).values < 0.999).any() for labels in seen[True])
    else:
        assert all(labels.dim() == 1 for labels in seen[True])
    assert seen[False] and all(labels.dim() == 1 and not labels.is_floating_point() for labels in seen[False])
    assert sum(len(labels) for labels in seen[False]) >= 56  # every validation image, unmixed


def test_pair_classes_add_blends_of_two_classes_labelled_by_their_pair():
    torch.manual_seed(0)
    pairs = PairClasses(num_labels=3, share=0.5)
    assert pairs.names(["a", "b", "c"]) == ["a+b", "a+c", "b+c"]  # outputs 3, 4, 5
    pixels = torch.eye(8).view(8, 1, 1, 8)  # face i is a 1 at position i: a blend shows its parents and shares
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    for _ in range(20):
        mixed, mixed_labels = pairs(pixels, labels)
        assert torch.equal(mixed[:8], pixels) and torch.equal(mixed_labels[:8], labels)
        assert 1 <= len(mixed) - 8 <= 4 and len(mixed_labels) == len(mixed)
        for blend, pair in zip(mixed[8:].flatten(1), mixed_labels[8:]):
            parents = torch.nonzero(blend).flatten()
            assert len(parents) == 2 and torch.isclose(blend.sum(), torch.tensor(1.0))
            assert ((blend[parents] >= 0.4 - 1e-6) & (blend[parents] <= 0.6 + 1e-6)).all()
            assert pairs.pairs[int(pair) - 3] == tuple(sorted(int(labels[i]) for i in parents))
    one_class = torch.zeros(8, dtype=torch.long)
    assert torch.equal(pairs(pixels, one_class)[1], one_class)  # no pair to blend
    assert torch.equal(PairClasses(num_labels=3, share=0.0)(pixels, labels)[1], labels)


def test_pair_classes_train_extra_outputs_and_write_the_real_classes_only(learnable_zip, tmp_path, monkeypatch):
    """A real run: training steps see pair labels beyond the seven classes, evaluation the real faces only,
    and the folder written has seven outputs that pipeline() names."""
    seen = losses_seen(monkeypatch, with_width=True)
    output_dir = tmp_path / "pairs"
    results = run_tiny(learnable_zip, output_dir, "--pair_class_share", "0.5", "--max_train_samples", "64")
    outputs = len(EMOTIONS) + len(EMOTIONS) * (len(EMOTIONS) - 1) // 2
    assert all(width == outputs for _, width in seen[True])  # 7 + 21 outputs while training
    # evaluated with them after each epoch, then the model written is scored with its seven
    assert [width for _, width in seen[False]][0] == outputs and seen[False][-1][1] == len(EMOTIONS)
    assert all(len(labels) == 16 + 8 and labels[16:].min() >= len(EMOTIONS) for labels, _ in seen[True])
    assert all(labels.max() < len(EMOTIONS) for labels, _ in seen[False])
    assert results["validation"]["num_examples"] == 56
    config = json.loads((output_dir / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(len(config["id2label"]))] == list(EMOTIONS)
    assert load_file(output_dir / "model.safetensors")["classifier.weight"].shape[0] == len(EMOTIONS)
    answer = pipeline("image-classification", model=str(output_dir), top_k=len(EMOTIONS))(
        pattern_face(0, seed=0))
    assert sorted(a["label"] for a in answer) == sorted(EMOTIONS)


def test_unchanged_code_trains_under_torchrun(learnable_zip, tmp_path):
    """Two processes (gloo on CPU stands in for GPUs): data loads once, rank 0 writes the folder."""
    output_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py",
               "--config", TINY, "--data", str(learnable_zip), "--output_dir", str(output_dir), "--ddp_backend", "gloo",
               "--max_train_samples", "64", "--disable_tqdm", "true"]
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    # Every rank's last lines, with what each found in the folder: a once-seen failure (rank 1 resuming from
    # a checkpoint rank 0 was still writing, under heavy load) could not be told apart from rank lines alone.
    assert out.returncode == 0, out.stderr[-8000:]
    assert (output_dir / "model.safetensors").is_file() and (output_dir / "README.md").is_file()
    state = json.loads((output_dir / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2  # 64 images / (2 processes x 16 per device)


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_distillation_from_a_teacher(trained, learnable_zip, tmp_path, caplog, monkeypatch, kind):
    """End to end: the recipe's teacher reaches the trainer, which distils in training steps only."""
    teacher_dir, teacher_results = trained
    caplog.set_level("INFO")
    terms = []  # (model in training mode, the teacher's term) of each call
    distillation_loss = EmotionTrainer._distillation_loss

    def spy(self, logits, pixel_values):
        terms.append((self.model.training, float((term := distillation_loss(self, logits, pixel_values)).detach())))
        return term

    monkeypatch.setattr(EmotionTrainer, "_distillation_loss", spy)
    results = run_tiny(learnable_zip, tmp_path / kind, "--teacher_model", str(teacher_dir), "--distillation", kind,
                       "--num_train_epochs", "6", "--learning_rate", "3e-3", "--augmentation_strength", "0.5")
    assert "distilling from" in caplog.text
    assert len(terms) == 6 * 14 and all(training and term > 0 for training, term in terms)  # 210 images, 16 a step
    assert results["validation"]["accuracy"] >= 0.5  # the teacher (>= 0.5) guides it; chance is 1/7


def sharp_teacher(seed: int = 1):
    """A tiny ViT whose logits are far from uniform (a random init's are near zero), so its term weighs."""
    torch.manual_seed(seed)
    teacher = build_model(model_type="vit", model_config=TINY_VIT).eval()
    with torch.no_grad():
        teacher.classifier.weight.mul_(200)
        teacher.classifier.bias.copy_(torch.randn_like(teacher.classifier.bias) * 2)
    return teacher


def distillation_term(kind: str, logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float):
    """Written out apart from the trainer: CE against the teacher's top class, or T^2 KL(teacher || student)."""
    if kind == "hard":
        return F.cross_entropy(logits, teacher_logits.argmax(-1))
    teacher_p = torch.softmax(teacher_logits / temperature, -1)
    kl = teacher_p * (teacher_p.log() - torch.log_softmax(logits / temperature, -1))
    return kl.sum(-1).mean() * temperature**2


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_distillation_loss_is_the_weighted_sum_of_labels_and_teacher(tmp_path, kind):
    alpha, temperature = 0.3, 3.0
    teacher = sharp_teacher()
    batch = face_batch()
    with torch.no_grad():
        teacher_logits = teacher(pixel_values=batch["pixel_values"]).logits
    batch["labels"] = (teacher_logits.argmax(-1) + 1) % len(EMOTIONS)  # the teacher disagrees with every label
    model_args = ModelArguments(distillation=kind, distillation_alpha=alpha, distillation_temperature=temperature)
    torch.manual_seed(0)
    trainer, _, _ = loss_trainer(tmp_path, teachers=[teacher], model_args=model_args)
    with torch.no_grad():  # a confident student too, so that cross-entropies against other targets differ
        trainer.model.classifier.weight.mul_(200)

    trainer.model.train()
    loss, outputs = trainer.compute_loss(trainer.model, dict(batch), return_outputs=True)
    logits = outputs.logits.detach()
    label_term = F.cross_entropy(logits, batch["labels"])
    teacher_term = distillation_term(kind, logits, teacher_logits, temperature)
    other_term = distillation_term("soft" if kind == "hard" else "hard", logits, teacher_logits, temperature)
    assert teacher_term > 0.5 and abs(teacher_term - label_term) > 0.5 and abs(teacher_term - other_term) > 0.5
    assert torch.allclose(loss.detach(), (1 - alpha) * label_term + alpha * teacher_term, rtol=1e-4)

    trainer.model.eval()  # evaluation's loss: the labels' alone
    with torch.no_grad():
        loss, outputs = trainer.compute_loss(trainer.model, dict(batch), return_outputs=True)
    assert torch.allclose(loss, F.cross_entropy(outputs.logits, batch["labels"]), rtol=1e-4)


def test_flip_tta_teacher_answers_with_the_mean_of_a_face_and_its_mirror(tmp_path):
    """--teacher_flip_tta: the target is the mean of the teacher's probabilities on each face and its
    mirror image (as the app serves a model), not its one view."""
    teacher = sharp_teacher()
    pixels = face_batch()["pixel_values"]  # random noise: a face and its mirror get other answers
    with torch.no_grad():
        one_view = teacher(pixel_values=pixels).logits.softmax(-1)
        mirrored = teacher(pixel_values=pixels.flip(-1)).logits.softmax(-1)
    expected = ((one_view + mirrored) / 2).log()
    trainer, _, _ = loss_trainer(tmp_path, teachers=[teacher], model_args=ModelArguments(teacher_flip_tta=True))
    got = trainer._teacher_logits(pixels)
    assert torch.allclose(got.softmax(-1), expected.exp(), atol=1e-5)
    assert torch.allclose(got.exp().sum(-1), torch.ones(len(pixels)), atol=1e-5)  # log-probabilities
    assert (expected.exp() - one_view).abs().max() > 0.1  # the mirror changed the answer


@pytest.mark.parametrize("flip", [False, True])
def test_several_teachers_answer_with_the_mean_of_their_probabilities(tmp_path, flip):
    """--teacher_model A B: an ensemble teacher, the mean of the teachers' (and views') probabilities."""
    teachers = [sharp_teacher(seed) for seed in (1, 2)]
    pixels = face_batch()["pixel_values"]
    views = [pixels, pixels.flip(-1)] if flip else [pixels]
    with torch.no_grad():
        answers = [teacher(pixel_values=view).logits.softmax(-1) for teacher in teachers for view in views]
    expected = torch.stack(answers).mean(0)
    trainer, _, _ = loss_trainer(tmp_path, teachers=teachers, model_args=ModelArguments(teacher_flip_tta=flip))
    got = trainer._teacher_logits(pixels).exp()
    assert torch.allclose(got, expected, atol=1e-5)
    assert min((expected - answer).abs().max() for answer in answers) > 0.1  # not any one teacher's answer
    assert ModelArguments(teacher_model="runs/teacher").teacher_model == ["runs/teacher"]  # a recipe's string


@pytest.mark.parametrize("bf16", [False, True])
def test_teachers_run_under_the_students_mixed_precision(tmp_path, bf16):
    """accelerate casts only the prepared student's forward; the teachers must run the same way (in float32
    they took half of a bf16 run's step)."""
    teacher = sharp_teacher()
    trainer, _, _ = loss_trainer(tmp_path, teachers=[teacher], model_args=ModelArguments(), bf16=bf16)
    precision = {}

    def record(name):
        def hook(module, args, output):
            precision[name] = (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))
        return hook

    for name, model in (("student", trainer.model), ("teacher", teacher)):  # a layer: inside the cast forward
        model.classifier.register_forward_hook(record(name))
    student = trainer.accelerator.prepare_model(trainer.model)  # as the Trainer wraps it for training
    trainer.compute_loss(student.train(), face_batch())
    assert precision["teacher"] == precision["student"]
    assert precision["teacher"] == ((True, torch.bfloat16) if bf16 else (False, precision["teacher"][1]))


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_distillation_alone_drives_the_student_to_the_teacher(tmp_path, kind):
    """alpha = 1: the labels (all unlike the teacher's top class) are ignored, the teacher's classes learnt."""
    teacher = sharp_teacher()
    batch = face_batch()
    with torch.no_grad():
        teacher_top = teacher(pixel_values=batch["pixel_values"]).logits.argmax(-1)
    batch["labels"] = (teacher_top + 1) % len(EMOTIONS)
    torch.manual_seed(0)
    trainer, _, _ = loss_trainer(tmp_path, teachers=[teacher],
                                 model_args=ModelArguments(distillation=kind, distillation_alpha=1.0))
    student = trainer.model.train()
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: threads only add waits (10 s instead of 0.3 s on a busy 2-core box)
    try:
        for _ in range(40):
            optimizer.zero_grad()
            trainer.compute_loss(student, dict(batch)).backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        top = student.eval()(pixel_values=batch["pixel_values"]).logits.argmax(-1)
    assert (top == teacher_top).float().mean() >= 0.75 and not (top == batch["labels"]).any()


def test_a_teacher_that_knows_more_classes_answers_in_the_students(trained, learnable_zip, tmp_path, caplog):
    """A held-out-class student of a full model: the teacher's probabilities renormalised over the
    student's classes (its classifier cut to their rows), end to end through a training run."""
    teacher_dir, _ = trained
    student_labels = [name for name in EMOTIONS if name != "surprise"]
    (teacher,) = load_teachers([str(teacher_dir)], student_labels)
    full = AutoModelForImageClassification.from_pretrained(teacher_dir).eval()
    pixels = face_batch()["pixel_values"]
    with torch.no_grad():
        cut, whole = teacher(pixel_values=pixels).logits, full(pixel_values=pixels).logits
    kept = [EMOTIONS.index(name) for name in student_labels]
    assert [teacher.config.id2label[i] for i in range(6)] == student_labels
    assert torch.allclose(cut.softmax(-1), whole[:, kept].softmax(-1), atol=1e-6)
    assert not torch.allclose(cut.softmax(-1), whole.softmax(-1)[:, kept], atol=1e-3)  # renormalised

    with caplog.at_level("INFO"):
        run_tiny(learnable_zip, tmp_path / "x", "--teacher_model", str(teacher_dir), "--exclude_labels", "surprise")
    assert "answers in the student's 6 of its 7 labels" in caplog.text
    assert list(json.loads((tmp_path / "x" / "config.json").read_text())["id2label"].values()) == student_labels


def test_a_teacher_without_one_of_the_students_labels_is_refused(tmp_path):
    build_model(tuple(name for name in EMOTIONS if name != "surprise"), model_config=TINY_VIT).save_pretrained(
        tmp_path / "heldout")
    with pytest.raises(ValueError, match="not all of the student's"):
        load_teachers([str(tmp_path / "heldout")], list(EMOTIONS))
