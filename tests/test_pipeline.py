"""Recognition pipeline: crops, one batched forward for N faces, tracking and smoothing, bad frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SHARED_IMAGES, save_tiny_vit
from PIL import Image

from emotion_vit.detect import create_detector
from emotion_vit.labels import EMOTIONS
from emotion_vit.model import load_emotion_model
from emotion_vit.pipeline import EmotionPipeline, PipelineOptions, set_inference_threads
from emotion_vit.service import DEFAULT_MODEL
from emotion_vit.track import FaceTracker, iou


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """An untrained small ViT saved as a model folder: the pipeline's mechanics need no accuracy."""
    return load_emotion_model(save_tiny_vit(tmp_path_factory.mktemp("model")))


@pytest.fixture(scope="module")
def pipeline(small_model):
    return EmotionPipeline(small_model, create_detector("retinaface"))


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0
    assert abs(iou((0, 0, 10, 10), (5, 0, 15, 10)) - 1 / 3) < 1e-9


def test_tracker_keeps_ids_and_smooths():
    tracker = FaceTracker(smoothing=0.5, max_missed=1)
    happy, sad = np.eye(7)[3], np.eye(7)[4]
    ids, probs = tracker.update([(0, 0, 10, 10), (50, 50, 60, 60)], np.stack([happy, sad]))
    assert ids == [1, 2] and np.allclose(probs, np.stack([happy, sad]))
    # The faces moved a little and swapped order in the list: ids follow the boxes.
    ids, probs = tracker.update([(52, 51, 62, 61), (1, 1, 11, 11)], np.stack([happy, sad]))
    assert ids == [2, 1]
    assert np.allclose(probs[0], 0.5 * sad + 0.5 * happy) and np.allclose(probs[1], 0.5 * happy + 0.5 * sad)
    tracker.update([], np.empty((0, 7)))  # both missed once: kept
    ids, _ = tracker.update([(1, 1, 11, 11)], happy[None])
    assert ids == [1]
    tracker.update([], np.empty((0, 7)))
    tracker.update([], np.empty((0, 7)))  # track 2 missed 3 times (> max_missed): gone
    ids, _ = tracker.update([(52, 51, 62, 61)], sad[None])
    assert ids == [3]


def test_tracker_follows_a_face_that_left_its_old_box():
    """At 1-2 analysed frames a second a face can move past its box: the centre fallback keeps its id."""
    tracker = FaceTracker()
    happy = np.eye(7)[3][None]
    assert tracker.update([(100, 100, 200, 200)], happy)[0] == [1]
    assert tracker.update([(160, 110, 260, 210)], happy)[0] == [1]  # IoU 0.26 < 0.3, centre moved 0.6 sizes
    assert tracker.update([(400, 110, 500, 210)], happy)[0] == [2]  # 2.4 sizes away: another face


def test_n_faces_one_forward(pipeline, small_model, monkeypatch):
    calls = []
    original = small_model.model.forward
    monkeypatch.setattr(
        small_model.model, "forward", lambda **kw: calls.append(kw["pixel_values"].shape) or original(**kw)
    )
    crops = [np.random.default_rng(i).integers(0, 255, (40 + i, 40 + i, 3), dtype=np.uint8) for i in range(8)]
    probabilities = pipeline.classify(crops)
    assert calls == [(8, 3, 48, 48)]
    assert probabilities.shape == (8, 7) and np.allclose(probabilities.sum(1), 1, atol=1e-5)
    calls.clear()
    one_by_one = EmotionPipeline(small_model, pipeline.detector, PipelineOptions(batched=False)).classify(crops)
    assert len(calls) == 8 and np.allclose(one_by_one, probabilities, atol=1e-5)


@pytest.mark.parametrize("frame", [
    np.zeros((480, 640, 3), np.uint8),  # no face
    np.zeros((1, 1, 3), np.uint8),
    np.zeros((480, 640), np.uint8),  # grayscale
    np.zeros((480, 640, 4), np.uint8),  # RGBA
    (np.random.default_rng(0).random((240, 320, 3)) * 65535).astype(np.uint16),  # 16-bit
    Image.new("RGBA", (320, 240)), Image.new("I;16", (320, 240)), Image.new("P", (64, 64))])
def test_frames_without_faces_and_odd_formats_give_an_empty_list(pipeline, frame):
    analysis = pipeline.analyze(frame)
    assert analysis.faces == [] and analysis.timings_ms["total"] >= 0


@pytest.mark.parametrize("frame", [None, np.zeros((0, 0, 3), np.uint8), np.zeros((10, 10, 7), np.uint8), "x"])
def test_unusable_frames_are_clear_errors(pipeline, frame):
    with pytest.raises(ValueError):
        pipeline.analyze(frame)


@pytest.mark.skipif(not SHARED_IMAGES.is_dir(), reason="../shared/images is absent")
def test_group_photo_all_faces_in_one_batch_with_tracking(pipeline, small_model, monkeypatch):
    photo = np.asarray(Image.open(SHARED_IMAGES / "solvay1927.png").convert("RGB"))
    batches = []
    original = small_model.model.forward
    monkeypatch.setattr(
        small_model.model, "forward", lambda **kw: batches.append(len(kw["pixel_values"])) or original(**kw)
    )
    tracker = FaceTracker()
    first = pipeline.analyze(photo, tracker)
    assert len(first.faces) == 29 and batches == [29]
    assert sorted(f.track_id for f in first.faces) == list(range(1, 30))
    second = pipeline.analyze(photo, tracker)
    assert [f.track_id for f in second.faces] == [f.track_id for f in first.faces]  # same faces, same ids
    for face in second.faces:
        assert set(face.probabilities) == set(EMOTIONS) and abs(sum(face.probabilities.values()) - 1) < 1e-4
        assert face.label == max(face.probabilities, key=face.probabilities.get)


def test_flip_tta_averages_a_face_and_its_mirror(small_model):
    faces = [np.random.default_rng(i).integers(0, 255, (60, 60, 3), dtype=np.uint8) for i in range(3)]
    plain = small_model.predict_proba(faces)
    mirrored = small_model.predict_proba([f[:, ::-1] for f in faces])
    small_model.flip_tta = True
    try:
        assert torch.allclose(small_model.predict_proba(faces), (plain + mirrored) / 2, atol=1e-5)
    finally:
        small_model.flip_tta = False


def test_faces_larger_than_the_training_faces_are_first_reduced_to_their_resolution():
    """A sharp 200-pixel camera crop reaches the model with the detail of a 48-pixel training face."""
    import cv2

    from emotion_vit.transforms import Preprocessing

    rng = np.random.default_rng(0)
    big, small = rng.integers(0, 256, (200, 200), np.uint8), rng.integers(0, 256, (48, 48), np.uint8)
    like_training = cv2.resize(cv2.resize(big, (48, 48), interpolation=cv2.INTER_AREA), (64, 64))
    np.testing.assert_array_equal(Preprocessing(size=64, face_resolution=48).resize(big), like_training)
    assert not np.array_equal(Preprocessing(size=64).resize(big), like_training)
    # A face at (or below) the training resolution is resized exactly as before.
    np.testing.assert_array_equal(Preprocessing(size=64, face_resolution=48).resize(small),
                                  Preprocessing(size=64).resize(small))


def test_the_training_resolution_travels_in_the_processor_config(tmp_path, learnable_zip):
    from emotion_vit.data import face_resolution, load_emotion_dataset
    from emotion_vit.model import build_image_processor

    resolution = face_resolution(load_emotion_dataset(learnable_zip)["train"])
    assert resolution == 48  # the pattern faces are 48x48, like FER2013's
    save_tiny_vit(tmp_path / "upscaled")
    build_image_processor(64, face_resolution=resolution).save_pretrained(tmp_path / "upscaled")
    build_image_processor(48, face_resolution=resolution).save_pretrained(tmp_path / "native")
    assert load_emotion_model(tmp_path / "upscaled").preprocessing.face_resolution == 48
    assert "face_resolution" not in (tmp_path / "native" / "preprocessor_config.json").read_text()
    assert load_emotion_model(DEFAULT_MODEL).preprocessing.face_resolution == 48  # the shipped model


def test_photos_average_a_tighter_and_a_looser_crop_in_the_same_forward(small_model, monkeypatch):
    from emotion_vit.crop import CropGeometry
    from emotion_vit.detect import Face

    frame = np.random.default_rng(3).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    faces = [Face(box=(100.0, 100.0, 200.0, 230.0), score=0.9), Face(box=(400.0, 50.0, 460.0, 130.0), score=0.9)]
    spread = EmotionPipeline(small_model, create_detector("retinaface"), PipelineOptions(crop_spread=0.1))
    monkeypatch.setattr("emotion_vit.pipeline.find_faces", lambda detector, frame, options=None: faces)
    batches = []
    original = small_model.model.forward
    monkeypatch.setattr(small_model.model, "forward",
                        lambda **kw: batches.append(len(kw["pixel_values"])) or original(**kw))
    analysis = spread.analyze(frame)
    assert batches == [6]  # both faces, three crops each, one forward
    geometry = CropGeometry()
    for face, result in zip(faces, analysis.faces):
        crops = [CropGeometry(scale=geometry.scale * f).crop(frame, face.box) for f in (0.9, 1.0, 1.1)]
        sides = [len(crop) for crop in spread.crops(frame, face)]
        assert sides == [len(crop) for crop in crops] and sides[0] < sides[1] < sides[2]
        expected = small_model.predict_proba(crops).numpy().mean(0)
        assert np.allclose([result.probabilities[label] for label in small_model.labels], expected, atol=1e-5)
    # A face that is the whole image (an uploaded crop) is classified as it is, once.
    crop = frame[100:148, 100:148]
    whole = Face(box=(4.0, 2.0, 44.0, 46.0), score=0.9)
    assert len(spread.crops(crop, whole)) == 1


def test_inference_threads_follow_omp_num_threads_unless_given(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert set_inference_threads() == 1 and torch.get_num_threads() == 1  # a benchmark beside a training job
        assert set_inference_threads(2) == 2 and torch.get_num_threads() == 2  # --threads wins
        monkeypatch.setenv("OMP_NUM_THREADS", "junk")
        assert set_inference_threads() >= 1
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert set_inference_threads() >= 1
    finally:
        torch.set_num_threads(before)
