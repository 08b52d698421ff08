"""Face detection: input conversion, edge-case frames, and both backends on real photos.

The photo and YuNet tests use ../shared (next to the repository) and skip when it is absent.
Measured with the default options (score_threshold 0.6), both backends find exactly 1 face in
astronaut.png and exactly 29 in solvay1927.png, natively and with upscale=1.5; the bounds below
leave one face of slack for other CPUs / library builds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emotion_vit.detect import (
    DETECTOR_BACKENDS,
    MAX_DETECTION_SIDE,
    YUNET_FILENAME,
    DetectorOptions,
    Face,
    as_rgb_uint8,
    create_detector,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
IMAGES = SHARED / "images"
YUNET_MODEL = SHARED / "models" / YUNET_FILENAME

# Where the astronaut's face is (x1, y1, x2, y2), checked by eye on a drawn crop: RetinaFace gives
# about (178, 57, 273, 177), YuNet about (178, 63, 268, 176). Compared with a tolerance below.
ASTRONAUT_FACE = (178.0, 60.0, 270.0, 177.0)
SOLVAY_FACES = 29


def requires(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} is absent (shared test files are not part of the repository)")


def load_image(name: str) -> np.ndarray:
    requires(IMAGES / name)
    return np.asarray(Image.open(IMAGES / name).convert("RGB"))


@pytest.fixture(scope="module", params=DETECTOR_BACKENDS)
def detector(request):
    """One detector per backend for the whole module (models load once); options reset per test below."""
    model_path = None
    if request.param == "yunet":
        requires(YUNET_MODEL)
        model_path = YUNET_MODEL
    return create_detector(request.param, model_path=model_path)


@pytest.fixture(autouse=True)
def default_options(request):
    if "detector" in request.fixturenames:
        request.getfixturevalue("detector").options = DetectorOptions()


@pytest.fixture(scope="module")
def retinaface():
    return create_detector("retinaface")


def assert_close_box(box, expected, tolerance: float) -> None:
    message = f"box {np.round(box, 1)} is not within {tolerance} px of {np.round(expected, 1)}"
    assert np.allclose(box, expected, atol=tolerance), message


# --- as_rgb_uint8 -------------------------------------------------------------------------------------

GRAY_VALUES = np.array([[0, 64], [128, 255]], dtype=np.uint8)


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "1", "CMYK", "YCbCr"])
def test_as_rgb_uint8_converts_8_bit_pil_modes(mode):
    rgb = Image.fromarray(np.stack([GRAY_VALUES] * 3, axis=-1))
    # An adaptive palette keeps the four grays exact; PIL's default web palette would quantise them.
    converted = rgb.convert("P", palette=Image.Palette.ADAPTIVE) if mode == "P" else rgb.convert(mode)
    result = as_rgb_uint8(converted)
    assert result.shape == (2, 2, 3) and result.dtype == np.uint8
    if mode == "1":  # 1-bit: PIL thresholds at 128
        assert (result[..., 0] == np.array([[0, 0], [255, 255]])).all()
    else:  # a gray picture stays that gray (CMYK and YCbCr round trips may be off by a level or two)
        assert np.abs(result.astype(int) - GRAY_VALUES[..., None]).max() <= 3


def test_as_rgb_uint8_keeps_colour_and_drops_alpha_of_pil_rgba():
    rgba = Image.new("RGBA", (3, 2), (10, 20, 30, 0))
    assert (as_rgb_uint8(rgba) == [10, 20, 30]).all()


@pytest.mark.parametrize(
    "pil_image, expected",
    [
        (Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=np.uint16)), [0, 100, 255]),  # mode I;16
        (Image.fromarray(np.array([[0, 200, 257 * 100]], dtype=np.int32)), [0, 0, 100]),  # mode I, 16-bit range
        (Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)), [0, 128, 255]),  # mode F in [0, 1]
    ],
)
def test_as_rgb_uint8_scales_wide_pil_modes(pil_image, expected):
    assert pil_image.mode in ("I;16", "I", "F")
    result = as_rgb_uint8(pil_image)
    assert result.shape == (1, 3, 3) and result.dtype == np.uint8
    assert result[0, :, 0].tolist() == expected


def test_as_rgb_uint8_returns_uint8_rgb_arrays_without_copying():
    frame = np.zeros((4, 5, 3), dtype=np.uint8)
    assert as_rgb_uint8(frame) is frame


@pytest.mark.parametrize(
    "array, expected_first_pixel",
    [
        (np.full((4, 5), 7, np.uint8), [7, 7, 7]),  # gray HxW
        (np.full((4, 5, 1), 7, np.uint8), [7, 7, 7]),  # gray HxWx1
        (np.tile(np.array([1, 2, 3, 0], np.uint8), (4, 5, 1)), [1, 2, 3]),  # RGBA / RGBX: alpha dropped
        (np.full((4, 5, 3), 257 * 9, np.uint16), [9, 9, 9]),  # 16-bit
        (np.full((4, 5, 3), 0.5, np.float32), [128, 128, 128]),  # float in [0, 1]
        (np.full((4, 5, 3), 200.0, np.float64), [200, 200, 200]),  # float in [0, 255]
        (np.ones((4, 5), bool), [255, 255, 255]),  # boolean mask
        (np.full((4, 5, 3), 42, np.int64), [42, 42, 42]),  # Python ints
        (np.zeros((5, 4, 3), np.uint8).transpose(1, 0, 2), [0, 0, 0]),  # not C-contiguous
    ],
)
def test_as_rgb_uint8_converts_arrays(array, expected_first_pixel):
    result = as_rgb_uint8(array)
    assert result.shape == (4, 5, 3) and result.dtype == np.uint8 and result.flags.c_contiguous
    assert result[0, 0].tolist() == expected_first_pixel


@pytest.mark.parametrize(
    "bad, message",
    [
        (None, "None"),
        (np.zeros((0, 0, 3), np.uint8), "empty"),
        (np.zeros((0,), np.uint8), "empty"),
        (np.zeros((5,), np.uint8), "dimensions"),
        (np.zeros((1, 4, 4, 3), np.uint8), "dimensions"),
        (np.zeros((4, 4, 2), np.uint8), "channels"),
        (np.zeros((4, 4, 5), np.uint8), "channels"),
        (np.full((4, 4), "a"), "dtype"),
        (np.full((4, 4), np.nan), "NaN"),
        (np.full((4, 4), -1, np.int32), "0..65535"),
    ],
)
def test_as_rgb_uint8_rejects_what_is_not_an_image(bad, message):
    with pytest.raises(ValueError, match=message):
        as_rgb_uint8(bad)


# --- options and factory ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        dict(score_threshold=1.5),
        dict(min_face_size=-1),
        dict(upscale=0),
        dict(max_side=8),
        dict(nms_threshold=0),
    ],
)
def test_options_reject_impossible_values(options):
    with pytest.raises(ValueError):
        DetectorOptions(**options)


def test_detection_scale_respects_upscale_max_side_and_safety_cap():
    assert DetectorOptions().detection_scale(480, 640) == 1.0
    assert DetectorOptions(upscale=2).detection_scale(480, 640) == 2.0
    assert DetectorOptions(max_side=320).detection_scale(480, 640) == 0.5
    assert DetectorOptions(upscale=2, max_side=960).detection_scale(480, 640) == 1.5  # max_side wins
    assert DetectorOptions().detection_scale(10000, 10000) == MAX_DETECTION_SIDE / 10000


def test_create_detector_rejects_unknown_backends():
    with pytest.raises(ValueError, match="retinaface"):
        create_detector("haar")


# --- frames without faces, odd sizes ------------------------------------------------------------------


def test_blank_and_noise_frames_have_no_faces(detector):
    rng = np.random.default_rng(0)
    for frame in (
        np.zeros((480, 640, 3), np.uint8),
        np.full((480, 640, 3), 255, np.uint8),
        rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
    ):
        assert detector.detect(frame) == []


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 1), (15, 15, 3), (3, 200, 3)])
def test_tiny_frames_give_no_faces(detector, shape):
    detector.options = DetectorOptions(min_face_size=0)  # so the early size check is not what saves us
    assert detector.detect(np.zeros(shape, np.uint8)) == []


def test_empty_frame_is_an_error(detector):
    with pytest.raises(ValueError, match="empty"):
        detector.detect(np.zeros((0, 0, 3), np.uint8))


def test_huge_frame_with_max_side_is_fast_and_empty(retinaface):
    # np.zeros of 10000x10000x3 is 300 MB of lazily mapped zero pages; downscaling reads them without
    # committing memory, and max_side keeps detection small.
    retinaface.options = DetectorOptions(max_side=640)
    assert retinaface.detect(np.zeros((10000, 10000, 3), np.uint8)) == []


def test_safety_cap_shrinks_overlong_frames_and_maps_boxes_back(retinaface):
    # A 512x6000 strip exceeds MAX_DETECTION_SIDE without max_side: detection runs at 4096/6000 scale.
    # (A full 10000x10000 frame also works, but takes ~4 s and 1 GB at the 4096 cap: too slow here.)
    astronaut = load_image("astronaut.png")
    strip = np.zeros((512, 6000, 3), np.uint8)
    strip[:, 3000:3512] = astronaut
    retinaface.options = DetectorOptions()
    faces = retinaface.detect(strip)
    assert len(faces) == 1
    expected = np.add(ASTRONAUT_FACE, [3000, 0, 3000, 0])
    assert_close_box(faces[0].box, expected, tolerance=12)


# --- real photos --------------------------------------------------------------------------------------


def test_astronaut_has_one_face_with_landmarks_in_order(detector):
    faces = detector.detect(load_image("astronaut.png"))
    assert len(faces) == 1
    face = faces[0]
    assert isinstance(face, Face) and face.score > 0.9
    assert_close_box(face.box, ASTRONAUT_FACE, tolerance=10)
    assert face.width == face.box[2] - face.box[0] and face.area == face.width * face.height

    landmarks = face.landmarks
    assert landmarks.shape == (5, 2) and landmarks.dtype == np.float32
    x1, y1, x2, y2 = face.box
    assert ((landmarks >= [x1, y1]) & (landmarks <= [x2, y2])).all()
    right_eye, left_eye, nose, right_mouth, left_mouth = landmarks
    # Subject's right = image left; eyes above the nose, the nose above the mouth corners.
    assert right_eye[0] < nose[0] < left_eye[0] and right_mouth[0] < nose[0] < left_mouth[0]
    assert max(right_eye[1], left_eye[1]) < nose[1] < min(right_mouth[1], left_mouth[1])


def test_faces_are_frozen(detector):
    face = detector.detect(load_image("astronaut.png"))[0]
    with pytest.raises(AttributeError):
        face.score = 0.0
    with pytest.raises(ValueError):
        face.landmarks[0, 0] = 0.0


@pytest.mark.parametrize("upscale", [1.0, 1.5])
def test_solvay_group_photo_has_29_faces(detector, upscale):
    detector.options = DetectorOptions(upscale=upscale)
    faces = detector.detect(load_image("solvay1927.png"))
    assert SOLVAY_FACES - 1 <= len(faces) <= SOLVAY_FACES + 1
    areas = [face.area for face in faces]
    assert areas == sorted(areas, reverse=True)


def test_boxes_map_back_under_upscale_and_max_side(detector):
    astronaut = load_image("astronaut.png")
    native = np.array(detector.detect(astronaut)[0].box)

    detector.options = DetectorOptions(upscale=2.0)
    assert_close_box(detector.detect(astronaut)[0].box, native, tolerance=6)

    detector.options = DetectorOptions(max_side=256)  # detection at half size
    assert_close_box(detector.detect(astronaut)[0].box, native, tolerance=10)

    enlarged = np.asarray(Image.fromarray(astronaut).resize((1024, 1024), Image.BILINEAR))
    detector.options = DetectorOptions(max_side=640)  # 1024 -> 640 for detection, boxes back in 1024 pixels
    assert_close_box(detector.detect(enlarged)[0].box, native * 2, tolerance=12)


def test_min_face_size_counts_original_pixels(detector):
    astronaut = load_image("astronaut.png")  # face about 90-95 px wide
    detector.options = DetectorOptions(min_face_size=100, upscale=2.0)  # 180+ px in the upscaled image
    assert detector.detect(astronaut) == []
    detector.options = DetectorOptions(min_face_size=80, upscale=2.0)
    assert len(detector.detect(astronaut)) == 1


def test_detector_accepts_pil_and_grayscale_input(detector):
    requires(IMAGES / "astronaut.png")
    gray = Image.open(IMAGES / "astronaut.png").convert("L")
    assert len(detector.detect(gray)) == 1


# --- YuNet model cache --------------------------------------------------------------------------------


def test_yunet_uses_a_verified_cached_model(tmp_path, monkeypatch):
    requires(YUNET_MODEL)
    shutil.copy(YUNET_MODEL, tmp_path / YUNET_FILENAME)
    monkeypatch.setenv("EMOTION_VIT_CACHE", str(tmp_path))
    detector = create_detector("yunet")
    assert detector.model_path == tmp_path / YUNET_FILENAME


def test_yunet_refuses_a_cached_model_with_the_wrong_hash(tmp_path, monkeypatch):
    (tmp_path / YUNET_FILENAME).write_bytes(b"not the YuNet model")
    monkeypatch.setenv("EMOTION_VIT_CACHE", str(tmp_path))
    with pytest.raises(RuntimeError, match="sha256"):
        create_detector("yunet")
