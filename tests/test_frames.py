"""The live path measured end to end: frames with placed faces, the crop geometry and its fit,
detector framing in training, and `train.py evaluate-frames` on data the tests make."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, pattern_face, save_tiny_vit, write_image_folder, zip_folder
from fake_webcam import ASTRONAUT, ASTRONAUT_FACE_CROP
from PIL import Image

from emotion_vit.crop import KEPT_TILT_DEGREES, CropGeometry, find_faces, fit_geometry
from emotion_vit.detect import create_detector
from emotion_vit.frames import FrameOptions, detected_boxes, face_free_frame, place_face, placed_faces
from emotion_vit.transforms import DetectorFraming, training_augmentation

GEOMETRY_FIT = REPO / "configs" / "crop-geometry-retinaface.json"


def astronaut_face(side: int = 48) -> np.ndarray:
    """The astronaut's face cut FER2013-style: a square from the hairline to the chin, gray."""
    return np.asarray(Image.open(ASTRONAUT).convert("L").crop((170, 60, 280, 170)).resize((side, side)))


@pytest.fixture(scope="module")
def detector():
    return create_detector("retinaface")


def test_placed_faces_are_seeded_inside_the_frame_and_pasted_as_is():
    faces = [np.asarray(pattern_face(i % 7, i)) for i in range(12)]
    options = FrameOptions(width=320, height=240, min_face=60, max_face=200, seed=3)
    first, again = list(placed_faces(faces, options)), list(placed_faces(faces, options))
    assert {p.background for p in first} == {"replicate", "blur", "mosaic"}
    for face, placed, same in zip(faces, first, again):
        assert placed.frame.shape == (240, 320, 3) and placed.frame.dtype == np.uint8
        assert np.array_equal(placed.frame, same.frame) and placed.box == same.box
        x1, y1, x2, y2 = map(int, placed.box)
        assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 240 and 60 <= x2 - x1 == y2 - y1 <= 200
        pasted = placed.frame[y1:y2, x1:x2, 0]  # the face itself, scaled: its mean brightness is kept
        assert abs(pasted.mean() - face.mean()) < 3
    assert not np.array_equal(first[0].frame, next(placed_faces(faces, FrameOptions(width=320, height=240, min_face=60,
                                                                                        max_face=200, seed=4))).frame)


@pytest.mark.parametrize("bad", [{"backgrounds": ("sky",)}, {"backgrounds": ()}, {"min_face": 300},
                                 {"min_face": 8}, {"min_face": 200, "max_face": 100}])
def test_frame_options_refuse_impossible_settings(bad):
    with pytest.raises(ValueError):
        FrameOptions(**bad)


def test_geometry_fit_recovers_a_known_geometry_and_reports_the_spread():
    rng = np.random.default_rng(0)
    truth = CropGeometry(scale=1.2, shift_x=0.03, shift_y=-0.05)
    boxes, squares = [], []
    for _ in range(400):
        x, y, w = rng.uniform(0, 400), rng.uniform(0, 300), rng.uniform(40, 200)
        box = (x, y, x + w, y + w * rng.uniform(1.1, 1.4))
        x1, y1, x2, y2 = truth.square(box)
        jitter = rng.normal(0, 0.02 * (x2 - x1), 2)
        squares.append((x1 + jitter[0], y1 + jitter[1], x2 + jitter[0], y2 + jitter[1]))
        boxes.append(box)
    fit = fit_geometry(boxes, squares)
    assert abs(fit.geometry.scale - 1.2) < 0.005
    assert abs(fit.geometry.shift_x - 0.03) < 0.01 and abs(fit.geometry.shift_y + 0.05) < 0.01
    low, _, median, _, high = fit.shift_x_percentiles
    assert low < median < high and high - low < 0.1  # the jitter shows in the spread
    assert fit.to_dict()["faces"] == 400
    with pytest.raises(ValueError):
        fit_geometry([], [])
    with pytest.raises(ValueError):
        fit_geometry([(0, 0, 0, 10)], [(0, 0, 10, 10)])


def test_the_geometry_in_use_is_the_recorded_fit():
    record = json.loads(GEOMETRY_FIT.read_text())
    assert CropGeometry() == CropGeometry(record["scale"], record["shift_x"], record["shift_y"])
    assert len(record["samples"]) == record["faces"] > 1000 and record["command"].startswith("python bench/")


def test_crop_is_the_geometry_square_with_replicated_border_and_alignment():
    geometry = CropGeometry(scale=1.5, shift_x=0.0, shift_y=0.0)
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[20:60, 50:90] = 255
    crop = geometry.crop(frame, (50, 20, 90, 60))
    assert crop.shape == (60, 60, 3)  # 40 px box, 1.5x
    assert crop[30, 30].tolist() == [255, 255, 255] and crop[2, 2].tolist() == [0, 0, 0]
    assert geometry.crop(frame, (0, 0, 30, 30)).shape == (45, 45, 3)  # partly outside: border replicated
    eyes = np.array([[80, 90], [120, 110]], np.float32)  # tilted by atan(20/40)
    tilted = np.zeros((200, 200, 3), np.uint8)
    for x, y in eyes.astype(int):
        tilted[y - 3:y + 4, x - 3:x + 4] = 255
    landmarks = np.vstack([eyes, [[100, 120], [85, 140], [115, 140]]]).astype(np.float32)
    aligned = geometry.crop(tilted, (60, 60, 140, 160), landmarks)
    left, right = (np.argwhere(half[:, :, 0] > 128).mean(0) for half in (aligned[:, :60], aligned[:, 60:]))
    tilt = np.degrees(np.arctan2(right[0] - left[0], right[1] + 60 - left[1]))
    assert abs(tilt - KEPT_TILT_DEGREES) < 1.5  # 26.6 degrees brought down to the tilt the model knows
    slight = landmarks.copy()
    slight[1, 1] = slight[0, 1] + 40 * np.tan(np.radians(KEPT_TILT_DEGREES - 2))  # within it: not rotated
    assert np.array_equal(geometry.crop(tilted, (60, 60, 140, 160), slight), geometry.crop(tilted, (60, 60, 140, 160)))


def test_a_face_crop_is_taken_whole_and_a_frame_is_cut(detector):
    crop = np.repeat(astronaut_face(48)[:, :, None], 3, axis=2)
    faces = find_faces(detector, crop)  # 48 px: detected on an enlarged copy
    assert len(faces) == 1
    assert CropGeometry().face_crop(crop, faces[0]) is crop  # not cut again
    placed = place_face(astronaut_face(48), np.random.default_rng(0), FrameOptions(min_face=150, max_face=150))
    face = find_faces(detector, placed.frame)[0]
    cut = CropGeometry().face_crop(placed.frame, face)
    assert abs(cut.shape[0] - 150) < 20  # the cut reproduces the pasted square's size


def test_detected_boxes_match_placed_faces(detector):
    faces = [astronaut_face(48), np.asarray(pattern_face(0, 1))]  # a face, and stripes no detector takes for one
    boxes, squares, missed = detected_boxes(detector, placed_faces(faces, FrameOptions(seed=0)))
    assert len(boxes) == len(squares) == 1 and missed == 1


def test_a_face_free_frame_is_the_background_alone(detector):
    options = FrameOptions(width=320, height=240, min_face=60, max_face=200)
    frame = face_free_frame(astronaut_face(48), np.random.default_rng(0), options)
    again = face_free_frame(astronaut_face(48), np.random.default_rng(0), options)
    assert frame.shape == (240, 320, 3) and np.array_equal(frame, again)
    assert detector.detect(frame) == []  # the face cut into tiles is no face


def test_detector_framing_is_the_identity_at_the_geometry_and_seeded():
    face = astronaut_face(48)
    geometry = CropGeometry()
    framing = DetectorFraming([[geometry.scale, geometry.shift_x, geometry.shift_y]], p=1.0)
    assert np.array_equal(framing(image=face)["image"], face)
    record = json.loads(GEOMETRY_FIT.read_text())
    views = [
        training_augmentation(0, seed=7, framing=DetectorFraming.from_file(GEOMETRY_FIT, p=1.0))(image=face)["image"]
        for _ in range(2)
    ]
    assert np.array_equal(views[0], views[1]) and views[0].shape == face.shape
    assert not np.array_equal(views[0], face) and len(record["samples"]) > 1000


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_vit(tmp_path_factory.mktemp("model"))


def run_evaluate_frames(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "train.py"), "evaluate-frames", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=300)


def test_evaluate_frames_on_a_photo_folder(tiny_model, tmp_path):
    photos = tmp_path / "photos"
    for label, image in [("Happiness", Image.open(ASTRONAUT)), ("sad", Image.open(ASTRONAUT).crop(ASTRONAUT_FACE_CROP)),
                         ("sad", Image.new("RGB", (300, 200), "gray"))]:
        (photos / label).mkdir(parents=True, exist_ok=True)
        image.save(photos / label / f"{len(list(photos.rglob('*')))}.jpg")
    (photos / "sad" / "broken.jpg").write_bytes(b"not an image")
    done = run_evaluate_frames("--model", str(tiny_model), "--data", str(photos), "--output-dir", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "skipped broken.jpg" in done.stdout and "3 frames" in done.stdout
    results = json.loads((tmp_path / "out" / "eval_frames.json").read_text())
    assert results["num_examples"] == 3 and results["faces_missed"] == 1 and results["missed_per_label"] == {"sad": 1}
    assert results["flip_tta"] is True and results["match"] == "largest"
    answers = results["predictions"]  # per frame, in order: its name, true label, answer
    missed = [answer for answer in answers if answer["prediction"] is None]
    assert len(answers) == 3 and len(missed) == 1 and missed[0]["label"] == "sad"
    assert sorted(answer["frame"].split("/")[0] for answer in answers) == ["Happiness", "sad", "sad"]
    assert (tmp_path / "out" / "confusion_matrix_frames.png").is_file()
    assert sum(map(sum, results["confusion_matrix"])) == 2  # the missed face is in no predicted column


def test_evaluate_frames_places_face_crops_of_a_data_source(tiny_model, tmp_path):
    root = tmp_path / "crops"
    write_image_folder(root, {"happy": 3, "sad": 2}, {"test": "PublicTest"})
    Image.fromarray(astronaut_face(48)).save(root / "test" / "happy" / "PublicTest_9.jpg")
    write_image_folder(root, {"happy": 2, "sad": 2}, {"train": "Training"}, seed=5)
    done = run_evaluate_frames("--model", str(tiny_model), "--data", str(zip_folder(root, tmp_path / "crops.zip")),
                               "--match", "box", "--no-flip-tta", "--output-dir", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "out" / "eval_frames.json").read_text())
    # Six faces placed; the stripes are no face for any detector, the astronaut is found at its box.
    assert results["num_examples"] == 6 and results["faces_missed"] == 5 and results["flip_tta"] is False
    assert "faces placed in frames" in done.stdout


def test_evaluate_frames_errors_are_one_line(tiny_model, tmp_path):
    done = run_evaluate_frames("--model", str(tiny_model), "--data", str(tmp_path / "nothing.zip"))
    assert done.returncode == 2 and "archive not found" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "photos" / "bored").mkdir(parents=True)
    (tmp_path / "photos" / "happy").mkdir()
    Image.open(ASTRONAUT).save(tmp_path / "photos" / "happy" / "a.jpg")
    done = run_evaluate_frames("--model", str(tiny_model), "--data", str(tmp_path / "photos"))
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_evaluate_frames_with_an_adapter(tiny_model, tmp_path):
    """The app's path with an adapter: a new label the photos lack is reported by the faces it took."""
    from emotion_vit.adapt import AdaptOptions, References, build_adapter, save_adapter
    from emotion_vit.model import load_emotion_model
    refs = References()
    for i in range(2):
        refs.add_image(np.asarray(pattern_face(3, i).convert("RGB")), "bored", f"bored{i}", None)
    options = AdaptOptions(method="lora", steps=3, batch_size=4, lora_folds=0)
    adapter = tmp_path / "adapters" / "bored"
    save_adapter(*build_adapter(load_emotion_model(tiny_model), refs, "bored", options), adapter)
    photos = tmp_path / "photos" / "happy"
    photos.mkdir(parents=True)
    Image.open(ASTRONAUT).save(photos / "a.jpg")
    done = run_evaluate_frames("--model", str(tiny_model), "--data", str(tmp_path / "photos"),
                               "--adapter", str(adapter), "--output-dir", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "out" / "eval_frames.json").read_text())
    assert results["model"].endswith("+bored") and len(results["recall"]) == 8
    assert "bored (not in the data) took" in done.stdout and "happy" in done.stdout
    wrong = run_evaluate_frames("--model", str(tiny_model), "--data", str(tmp_path / "photos"),
                                "--adapter", str(tmp_path / "adapters" / "missing"))
    assert wrong.returncode == 2 and "no adapter named 'missing'" in wrong.stderr and "Traceback" not in wrong.stderr
