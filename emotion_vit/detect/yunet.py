"""YuNet through OpenCV's `cv2.FaceDetectorYN`; its ONNX weights downloaded once and checked by sha256."""

from __future__ import annotations

import hashlib
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np

from .base import MAX_CANDIDATES, DetectorOptions, FaceDetector, empty_detections

YUNET_FILENAME = "face_detection_yunet_2023mar.onnx"
YUNET_URL = f"https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/{YUNET_FILENAME}"
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"


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
            return empty_detections()
        # Each row: x, y, w, h, then right eye, left eye, nose tip, right and left mouth corner (x, y), score.
        boxes = rows[:, :4].copy()
        boxes[:, 2:] += boxes[:, :2]
        return boxes, rows[:, 14].copy(), rows[:, 4:14].reshape(-1, 5, 2).copy()

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
