"""The service behind the app, with no UI: settings, the model and detectors loaded once, adapters.

`EmotionService.analyze` is the app's exact path from an image to faces with emotions; the
Gradio layer (`emotion_vit.webapp`), the benchmarks and `train.py evaluate-frames` all call it,
so what is measured is what visitors get.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .adapt import METADATA_FILE, References, build_adapter, load_adapter, save_adapter
from .crop import CropGeometry
from .detect import DetectorOptions, FaceDetector, create_detector
from .model import EmotionModel, load_emotion_model
from .pipeline import EmotionPipeline, FrameAnalysis, PipelineOptions
from .track import FaceTracker

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "emotion-vit-fer2013"
MODEL_ENV = "EMOTION_VIT_MODEL"
ADAPTERS_ENV = "EMOTION_VIT_ADAPTERS"
NO_ADAPTER = "none"


def default_model() -> str:
    """The model to serve: $EMOTION_VIT_MODEL (hub id or folder), else the embedded checkpoint."""
    return os.environ.get(MODEL_ENV) or str(DEFAULT_MODEL)


@dataclass
class AppSettings:
    model: str = field(default_factory=default_model)
    detector: str = "retinaface"
    yunet_model: str | None = None  # local YuNet ONNX; unset: downloaded once (sha256-pinned)
    score_threshold: float = 0.6
    min_face_size: int = 20
    max_side: int = 640  # live frames are detected at most this large (speed); boxes map back
    photo_max_side: int = 1920  # photos and API images: larger, for small faces in group photos
    smoothing: float = 0.6
    geometry: CropGeometry = field(default_factory=CropGeometry)  # where crops are cut from boxes (fitted)
    align: bool = False
    flip_tta: bool = True  # each face also classified mirrored, in the same batch: +1.8 points on PublicTest
    stream_every: float = 0.2  # seconds between webcam frames sent for analysis
    stream_time_limit: int | None = None  # seconds a live stream may run; None: as long as the page is open
    adapters_dir: str = field(default_factory=lambda: os.environ.get(ADAPTERS_ENV, "adapters"))


class EmotionService:
    """The model and the detectors, loaded once and shared by all sessions."""

    def __init__(self, settings: AppSettings):
        self.settings = settings
        self.model: EmotionModel = load_emotion_model(settings.model)
        self.model.flip_tta = settings.flip_tta
        self._detectors: dict[str, FaceDetector] = {}
        self._adapted: dict[str, EmotionModel] = {}
        self._lock = threading.Lock()
        self.detector(settings.detector)  # fail at start-up, not on the first frame

    # --- adapters: adapters_dir/<name>/ in peft layout, loaded on first use and cached ---

    def adapter_names(self) -> list[str]:
        folder = Path(self.settings.adapters_dir)
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if (p / METADATA_FILE).is_file())

    def model_for(self, adapter: str | None) -> EmotionModel:
        if not adapter or adapter == NO_ADAPTER:
            return self.model
        if adapter not in self.adapter_names():
            raise ValueError(f"no adapter named {adapter!r} (available: {', '.join(self.adapter_names()) or 'none'})")
        with self._lock:
            if adapter not in self._adapted:
                self._adapted[adapter] = load_adapter(self.model, Path(self.settings.adapters_dir) / adapter)
                self._adapted[adapter].flip_tta = self.settings.flip_tta
            return self._adapted[adapter]

    def build_adapter(self, refs: References, name: str, progress=None) -> dict:
        name = name.strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name or ""):
            raise ValueError("adapter name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        model, metadata = build_adapter(self.model, refs, name, progress=progress)
        save_adapter(model, metadata, Path(self.settings.adapters_dir) / name)
        with self._lock:
            self._adapted.pop(name, None)  # a rebuilt adapter replaces the cached one
        return metadata

    def delete_adapter(self, name: str) -> None:
        if name not in self.adapter_names():
            raise ValueError(f"no adapter named {name!r}")
        with self._lock:
            self._adapted.pop(name, None)
            shutil.rmtree(Path(self.settings.adapters_dir) / name)

    def detector(self, name: str) -> FaceDetector:
        with self._lock:
            if name not in self._detectors:
                model_path = self.settings.yunet_model if name == "yunet" else None
                self._detectors[name] = create_detector(name, model_path=model_path)
            return self._detectors[name]

    def analyze(self, image, *, detector: str | None = None, score_threshold: float | None = None,
                align: bool | None = None, tracker: FaceTracker | None = None, live: bool = False,
                adapter: str | None = None) -> FrameAnalysis:
        settings = self.settings
        threshold = settings.score_threshold if score_threshold is None else score_threshold  # 0 is a threshold
        options = DetectorOptions(score_threshold=threshold,
                                  min_face_size=settings.min_face_size,
                                  max_side=settings.max_side if live else settings.photo_max_side)
        pipeline = EmotionPipeline(self.model_for(adapter), self.detector(detector or settings.detector),
                                   PipelineOptions(geometry=settings.geometry,
                                                   align=settings.align if align is None else align))
        return pipeline.analyze(image, tracker=tracker, detector_options=options)

    def describe(self, analysis: FrameAnalysis, detector: str | None = None, adapter: str | None = None) -> dict:
        """The JSON answer of /analyze."""
        return {"faces": [face.to_dict() for face in analysis.faces],
                "model": public_name(self.model_for(adapter).name), "detector": detector or self.settings.detector,
                "image": {"width": analysis.width, "height": analysis.height},
                "timings_ms": analysis.timings_ms}


def public_name(model_name: str) -> str:
    """A model's name for answers and the page: a folder's name, not the server's path to it."""
    base, _, adapter = model_name.partition("+")
    name = Path(base).name if Path(base).exists() else base
    return f"{name}+{adapter}" if adapter else name


