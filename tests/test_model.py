"""The embedded default checkpoint, as ML people use it: a hub-style folder that loads offline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import FER_ZIP, REPO
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

from emotion_vit.labels import EMOTIONS
from emotion_vit.service import DEFAULT_MODEL

ASTRONAUT = REPO / "tests" / "assets" / "astronaut.jpg"
PUBLIC_TEST_BAR = 0.670  # with flip test-time augmentation, as the app classifies (67.26%)
SINGLE_VIEW_FLOOR = 0.662  # one forward per face, as pipeline() classifies (66.51%)


def card_metadata() -> dict:
    text = (DEFAULT_MODEL / "README.md").read_text()
    return yaml.safe_load(text.split("---")[1])


def test_the_checkpoint_is_a_small_safetensors_folder():
    names = {path.name for path in DEFAULT_MODEL.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md",
            "feature_stats.safetensors"} <= names
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in names)
    assert (DEFAULT_MODEL / "model.safetensors").stat().st_size <= 25 * 2**20


def test_labels_are_in_fer2013_code_order():
    config = json.loads((DEFAULT_MODEL / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(7)] == list(EMOTIONS)
    assert config["label2id"] == {label: i for i, label in enumerate(EMOTIONS)}


def test_loads_offline_with_auto_classes_and_pipeline():
    model = AutoModelForImageClassification.from_pretrained(DEFAULT_MODEL)
    processor = AutoImageProcessor.from_pretrained(DEFAULT_MODEL)
    face = Image.open(ASTRONAUT).convert("RGB").crop((170, 40, 290, 190))  # the astronaut's face
    logits = model(**processor(images=face, return_tensors="pt")).logits
    assert logits.shape == (1, 7)

    classify = pipeline("image-classification", model=str(DEFAULT_MODEL))
    answer = classify(face, top_k=7)
    assert {row["label"] for row in answer} == set(EMOTIONS)
    assert abs(sum(row["score"] for row in answer) - 1) < 1e-4
    assert answer[0]["label"] == model.config.id2label[int(logits.argmax())]


def test_model_card_metadata_and_sections():
    metadata = card_metadata()
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "image-classification"
    assert "fer2013" in " ".join(metadata["datasets"]).lower()
    metrics = {m["type"]: m["value"] for result in metadata["model-index"][0]["results"] for m in result["metrics"]}
    assert metrics["accuracy"] >= SINGLE_VIEW_FLOOR
    text = (DEFAULT_MODEL / "README.md").read_text().lower()
    for words in ("intended use", "limitations", "high-stakes", "recipe"):
        assert words in text, words


@pytest.mark.skipif(not FER_ZIP.exists(), reason="../shared/data/fer2013.zip is absent")
def test_publictest_accuracy_meets_the_bar():
    from emotion_vit.evaluation import evaluate_model

    single_view = evaluate_model(DEFAULT_MODEL, str(FER_ZIP), split="validation")
    card_accuracy = [m["value"] for result in card_metadata()["model-index"][0]["results"]
                     for m in result["metrics"] if m["type"] == "accuracy"][0]
    assert np.isclose(single_view["accuracy"], card_accuracy, atol=0.002)  # the card reports what ships
    with_flip = evaluate_model(DEFAULT_MODEL, str(FER_ZIP), split="validation", flip_tta=True)
    assert with_flip["accuracy"] >= PUBLIC_TEST_BAR
    assert f"{with_flip['accuracy']:.2%}" in (DEFAULT_MODEL / "README.md").read_text()


@pytest.mark.skipif(not FER_ZIP.exists(), reason="../shared/data/fer2013.zip is absent")
def test_bfloat16_classification_agrees_with_float32():
    """`AppSettings.bf16` may switch the app to bfloat16 matrix products: same answers on real faces
    (PublicTest as a whole, the model before 2026-12-05's: 65.12% float32, 65.03% bf16, docs/benchmarks.md)."""
    import dataclasses

    from emotion_vit.data import load_emotion_dataset
    from emotion_vit.model import load_emotion_model

    model = load_emotion_model(DEFAULT_MODEL)
    faces = [np.asarray(image) for image in load_emotion_dataset(str(FER_ZIP))["validation"][:300]["image"]]
    float32 = model.predict_proba(faces)
    bfloat16 = dataclasses.replace(model, bf16=True).predict_proba(faces)
    assert float32.dtype == bfloat16.dtype == float32.float().dtype
    assert (float32.argmax(-1) == bfloat16.argmax(-1)).float().mean() >= 0.95
    assert 0 < (float32 - bfloat16).abs().max() < 0.1  # bfloat16 was used, and it changes little


def test_bf16_setting_follows_the_cpu(tmp_path, monkeypatch):
    from emotion_vit import service as service_module
    from emotion_vit.model import cpu_has_native_bf16

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert cpu_has_native_bf16(cpuinfo)
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512bw\n")  # bf16 only emulated: slower
    assert not cpu_has_native_bf16(cpuinfo)
    assert not cpu_has_native_bf16(tmp_path / "absent")
    for native in (True, False):
        monkeypatch.setattr(service_module, "cpu_has_native_bf16", lambda native=native: native)
        for setting, expected in (("auto", native), ("on", True), ("off", False)):
            assert service_module.AppSettings(bf16=setting).classify_in_bf16() is expected, (setting, native)
    assert service_module.EmotionService(service_module.AppSettings(bf16="on")).model.bf16
