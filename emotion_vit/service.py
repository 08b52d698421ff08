"""The service behind the app, with no UI: settings, the model and detectors loaded once, adapters.

`EmotionService.analyze` is the app's exact path from an image to faces with emotions; the
Gradio layer (`emotion_vit.webapp`), the benchmarks and `train.py evaluate-frames` all call it,
so what is measured is what visitors get.

Adapters belong to whoever made them. Each visitor holds a key (the browser keeps a random one;
API clients send their own) and sees, uses and changes only the adapters saved under it, in
``adapters_dir/_visitors/<hash of the key>/``, plus the operator's adapters in ``adapters_dir/<name>/``
(read-only). Whoever presents the operator's shared key ($EMOTION_VIT_SHARED_KEY) works in that
top folder itself: a teacher's private deployment where colleagues share adapters.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .adapt import METADATA_FILE, AdaptError, References, build_adapter, load_adapter, save_adapter
from .crop import ALIGN_FACES, KEPT_TILT_DEGREES, CropGeometry
from .detect import DETECTOR_BACKENDS, DetectorOptions, FaceDetector, create_detector
from .model import EmotionModel, cpu_has_native_bf16, load_emotion_model
from .pipeline import EmotionPipeline, FrameAnalysis, PipelineOptions
from .track import FaceTracker
from .visitors import VISITORS_DIR, adapters_used, client_tag, mark_used, tag_adapter

logger = logging.getLogger(__name__)
HEALTH_CHECK_EVERY_S = 2.0

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "emotion-vit-fer2013"
MODEL_ENV = "EMOTION_VIT_MODEL"
ADAPTERS_ENV = "EMOTION_VIT_ADAPTERS"
SHARED_KEY_ENV = "EMOTION_VIT_SHARED_KEY"
TRUSTED_PROXIES_ENV = "EMOTION_VIT_TRUSTED_PROXIES"
NO_ADAPTER = "none"
MIN_KEY_LENGTH = 16


def default_model() -> str:
    """The model to serve: $EMOTION_VIT_MODEL (hub id or folder), else the embedded checkpoint."""
    return os.environ.get(MODEL_ENV) or str(DEFAULT_MODEL)


def default_trusted_proxies() -> int:
    """$EMOTION_VIT_TRUSTED_PROXIES, else 1 on a Hugging Face Space (which sets $SPACE_ID), else 0."""
    return int(os.environ.get(TRUSTED_PROXIES_ENV) or (1 if os.environ.get("SPACE_ID") else 0))


@dataclass
class AppSettings:
    """What the app serves and how: each setting is a command-line flag of app.py (emotion_vit/flags.py)."""

    model: str = field(default_factory=default_model, metadata={
        "help": f"Model folder or hub id (env {MODEL_ENV}; else the embedded FER2013 model)."})
    detector: str = field(default="retinaface", metadata={
        "help": "Face detector.", "choices": list(DETECTOR_BACKENDS)})
    yunet_model: str | None = field(default=None, metadata={
        "help": "Local YuNet ONNX file (else downloaded once, sha256-checked)."})
    score_threshold: float = field(default=DetectorOptions.score_threshold, metadata={
        "help": "Minimum detector confidence for a face."})
    min_face_size: int = field(default=DetectorOptions.min_face_size, metadata={"help": "Smallest face side, pixels."})
    max_side: int = field(default=640, metadata={
        "help": "Live frames are detected at most this large (speed); boxes map back."})
    photo_max_side: int = field(default=1920, metadata={
        "help": "Photos and API images are detected at most this large (small faces in group photos)."})
    max_faces: int = field(default=200, metadata={
        "help": "Faces classified per image or frame, the largest first (bounds what one crowded or crafted "
                "image costs the shared server; a photo's answer counts the rest)."})
    smoothing: float = field(default=0.6, metadata={
        "help": "Live: weight of past frames in each face's probabilities (0: none)."})
    geometry: CropGeometry = field(default_factory=CropGeometry, metadata={"flag": False})  # fitted crop
    photo_crop_spread: float = field(default=0.1, metadata={
        "help": "Photos and API images: also classify each face from crops this much tighter and looser, averaged "
                "(0.9 points more accurate on PublicTest faces in frames, 3x the classifier time; 0: one crop). "
                "Live frames use one crop."})
    align: bool = field(default=ALIGN_FACES, metadata={
        "help": f"Rotate tilted faces upright (the eyes within {KEPT_TILT_DEGREES:g} degrees of level)."})
    flip_tta: bool = field(default=True, metadata={
        "help": "Classify each face once, not also mirrored "
                "(half the classifier time, 0.75 points less accurate on PublicTest)."})
    bf16: str = field(default="auto", metadata={
        "help": "Classify in bfloat16: auto where the CPU has it natively (AVX512-BF16, AMX): half the classifier "
                "time for a class of faces, the same accuracy; on or off to choose.", "choices": ["auto", "on", "off"]})
    stream_every: float = field(default=0.2, metadata={"help": "Seconds between webcam frames sent for analysis."})
    stream_time_limit: int | None = field(default=None, metadata={
        "help": "Seconds a live stream may run (default: as long as the page is open)."})
    adapters_dir: str = field(default_factory=lambda: os.environ.get(ADAPTERS_ENV, "adapters"), metadata={
        "help": f"Where adapters are saved (env {ADAPTERS_ENV})."})
    # A secret: from the environment only, never a flag (a command line is visible to every local user).
    shared_key: str | None = field(default_factory=lambda: os.environ.get(SHARED_KEY_ENV) or None,
                                   metadata={"flag": False})
    max_adapters_per_key: int = field(default=5, metadata={"help": "Adapters one visitor's key may keep."})
    max_adapter_labels: int = field(default=12, metadata={"help": "Labels one adapter may learn."})
    max_references: int = field(default=100, metadata={"help": "Reference faces held in one browser session."})
    visitor_adapter_idle_days: float = field(default=1.0, metadata={
        "help": "When the visitors' adapters reach their cap, the one used least recently makes room for a new "
                "one if it has not been used for this many days (0: never; builds are then refused)."})
    max_visitor_adapters: int = field(default=2000, metadata={
        "help": "Visitors' adapters kept on disk in all (about 12 KB each); at the cap an idle one makes room "
                "(--visitor-adapter-idle-days), else builds are refused."})
    max_adapters_per_client: int = field(default=200, metadata={
        "help": "Visitors' adapters built from one network address, under all its keys (keys are free; a school "
                "behind one address: 40 keys of 5); 0: no limit."})
    trusted_proxies: int = field(default_factory=default_trusted_proxies, metadata={
        "help": f"Proxies in front of the app that append the client's address to X-Forwarded-For (env "
                f"{TRUSTED_PROXIES_ENV}; 1 on a Hugging Face Space, else 0: the connection's own address)."})
    adapters_in_memory: int = field(default=8, metadata={
        "help": "Adapted models kept loaded (about 14 MB each); the least recently used one is dropped."})

    def classify_in_bf16(self) -> bool:
        return self.bf16 == "on" or (self.bf16 == "auto" and cpu_has_native_bf16())


class DetectorUnavailable(ValueError):
    """A face detector whose model this server cannot load (YuNet's file missing, no internet to fetch it)."""


class EmotionService:
    """The model and the detectors, loaded once and shared by all sessions."""

    def __init__(self, settings: AppSettings):
        self.settings = settings
        self.model: EmotionModel = load_emotion_model(settings.model)
        self.model.flip_tta = settings.flip_tta
        self.model.bf16 = settings.classify_in_bf16()
        self._detectors: dict[str, FaceDetector] = {}
        self._unavailable: set[str] = set()  # detectors whose model could not be loaded
        self._adapted: OrderedDict[str, EmotionModel] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self._health_lock, self._health = threading.Lock(), (0.0, None)  # the last check: (monotonic time, answer)
        self.detector(settings.detector)  # fail at start-up, not on the first frame

    # --- adapters: <folder>/<name>/ in peft layout, loaded on first use and cached by folder ---

    def key_folder(self, key: str | None) -> Path | None:
        """Where the adapters saved under `key` live; None without a key (only the operator's adapters)."""
        if not key:
            return None
        if not isinstance(key, str) or len(key) < MIN_KEY_LENGTH:
            raise ValueError(f"an adapter key has at least {MIN_KEY_LENGTH} characters")
        root = Path(self.settings.adapters_dir)
        if self.settings.shared_key and hmac.compare_digest(key.encode(), self.settings.shared_key.encode()):
            return root
        return root / VISITORS_DIR / hashlib.sha256(key.encode()).hexdigest()[:32]

    @staticmethod
    def _names_in(folder: Path | None) -> list[str]:
        if folder is None or not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if (p / METADATA_FILE).is_file())

    def own_adapter_names(self, key: str | None) -> list[str]:
        """The adapters saved under `key`: the ones it may overwrite or delete."""
        return self._names_in(self.key_folder(key))

    def adapter_names(self, key: str | None = None) -> list[str]:
        """The adapters `key` may use: its own, then the operator's (the same folder under the shared key)."""
        own = self._names_in(self.key_folder(key))
        return own + [name for name in self._names_in(Path(self.settings.adapters_dir)) if name not in own]

    def _adapter_folder(self, name: str, key: str | None) -> Path:
        for folder in (self.key_folder(key), Path(self.settings.adapters_dir)):
            if folder is not None and name in self._names_in(folder):
                return folder / name
        raise ValueError(f"no adapter named {name[:64]!r} (available: {', '.join(self.adapter_names(key)) or 'none'})")

    def model_for(self, adapter: str | None, key: str | None = None) -> EmotionModel:
        if not adapter or adapter == NO_ADAPTER:
            return self.model
        folder = self._adapter_folder(adapter, key)
        with self._lock:
            if str(folder) not in self._adapted:
                try:
                    self._adapted[str(folder)] = load_adapter(self.model, folder)  # with the base's flip TTA and bf16
                except (OSError, ValueError, KeyError) as error:  # its words (an AdaptError) name server folders
                    logger.warning("adapter %s cannot be loaded: %s", folder, error)
                    raise ValueError(f"adapter {adapter[:64]!r} cannot be used with this server's model: "
                                     "rebuild it from its references") from None
                while len(self._adapted) > max(self.settings.adapters_in_memory, 1):  # visitors' keys are free
                    self._adapted.popitem(last=False)
            self._adapted.move_to_end(str(folder))
            mark_used(folder)
            return self._adapted[str(folder)]

    def build_adapter(self, refs: References, name: str, key: str | None, progress=None,
                      client: str | None = None) -> dict:
        """Build and save an adapter under `key`, within the settings' quotas; `client`: the network asking
        (webapp.clients), None for a direct call."""
        settings, name = self.settings, name.strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name or ""):
            raise ValueError("adapter name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        folder = self.key_folder(key)
        if folder is None:
            raise ValueError("an adapter key is needed to save an adapter")
        own, visitor = self._names_in(folder), folder != Path(settings.adapters_dir)
        if name not in own and name in self.adapter_names(key):
            raise ValueError(f"{name!r} is one of this server's adapters: choose another name")
        if name not in own and visitor and len(own) >= settings.max_adapters_per_key:
            raise ValueError(f"at most {settings.max_adapters_per_key} adapters per key: delete one first")
        if len(set(refs.labels)) > settings.max_adapter_labels:
            raise ValueError(f"at most {settings.max_adapter_labels} labels per adapter")
        limited = visitor and client and settings.max_adapters_per_client > 0
        tag = client_tag(settings.adapters_dir, client) if limited else None
        if name not in own and tag:
            networks = adapters_used(settings.adapters_dir, tag)
            if len(networks) >= settings.max_adapters_per_client and not self._make_room(networks):
                raise ValueError(f"this server keeps at most {settings.max_adapters_per_client} adapters built "
                                 "from one network address, and yours has them (other visitors on it count too)")
        if name not in own and visitor:
            everyone = adapters_used(settings.adapters_dir)
            if len(everyone) >= settings.max_visitor_adapters and not self._make_room(everyone):
                raise ValueError("this server holds as many visitors' adapters as it may: try again later")
        try:
            model, metadata = build_adapter(self.model, refs, name, progress=progress)
        except AdaptError as error:  # its words name the model's folder, which a visitor is not told
            raise AdaptError(str(error).replace(self.model.name, public_name(self.model.name))) from None
        with self._lock:  # a delete of the same adapter (another group, another request) waits for the files
            if tag:
                tag_adapter(folder / name, tag)
            save_adapter(model, metadata, folder / name)
            self._adapted.pop(str(folder / name), None)  # a rebuilt adapter replaces the cached one
        return metadata

    def _make_room(self, used: list[tuple[float, Path]]) -> bool:
        """Delete the least recently used of these visitors' adapters (adapters_used: the server's, or one
        network's), if it has been idle `visitor_adapter_idle_days`: keys cost nothing, and a server (or a
        network) filled once by one client would otherwise refuse every build."""
        last_used, folder = min(used, default=(time.time(), None))
        idle_s = time.time() - last_used
        if folder is None or self.settings.visitor_adapter_idle_days <= 0 or \
                idle_s < self.settings.visitor_adapter_idle_days * 86400:
            return False
        with self._lock:
            self._adapted.pop(str(folder), None)
            shutil.rmtree(folder, ignore_errors=True)
        logger.info("removed a visitor's adapter unused for %.1f days to make room", idle_s / 86400)
        return True

    def delete_adapter(self, name: str, key: str | None) -> None:
        """Delete one of `key`'s own adapters (never the operator's, unless `key` is the shared key)."""
        folder = self.key_folder(key)
        if name not in self._names_in(folder):
            raise ValueError(f"no adapter of yours named {str(name)[:64]!r}")
        with self._lock:
            self._adapted.pop(str(folder / name), None)
            shutil.rmtree(folder / name, ignore_errors=True)  # another delete of it may have come first

    def detector(self, name: str) -> FaceDetector:
        """The detector `name`, loaded on first use. One whose model cannot be had (YuNet's file missing and
        no internet) is DetectorUnavailable, in words for a visitor, from then on without trying again:
        the details go to the log, and no request waits on a download that failed once."""
        if name not in DETECTOR_BACKENDS:  # a visitor's choice: a path or a typo is refused, never looked up
            raise ValueError(f"Unknown detector; choose one of {', '.join(DETECTOR_BACKENDS)}.")
        with self._lock:
            if name not in self._detectors and name not in self._unavailable:
                model_path = self.settings.yunet_model if name == "yunet" else None
                try:
                    self._detectors[name] = create_detector(name, model_path=model_path)
                except (OSError, RuntimeError) as error:
                    logger.error("the %s face detector cannot be loaded: %s", name, error)
                    self._unavailable.add(name)
            if name in self._unavailable:
                raise DetectorUnavailable(f"The {name} face detector is not available on this server; choose another.")
            return self._detectors[name]

    def analyze(self, image, *, detector: str | None = None, score_threshold: float | None = None,
                align: bool | None = None, tracker: FaceTracker | None = None, live: bool = False,
                adapter: str | None = None, key: str | None = None) -> FrameAnalysis:
        settings = self.settings
        threshold = settings.score_threshold if score_threshold is None else score_threshold  # 0 is a threshold
        options = DetectorOptions(score_threshold=threshold,
                                  min_face_size=settings.min_face_size,
                                  max_side=settings.max_side if live else settings.photo_max_side)
        pipeline = EmotionPipeline(self.model_for(adapter, key), self.detector(detector or settings.detector),
                                   PipelineOptions(geometry=settings.geometry,
                                                   align=settings.align if align is None else align,
                                                   crop_spread=0.0 if live else settings.photo_crop_spread,
                                                   max_faces=settings.max_faces))
        return pipeline.analyze(image, tracker=tracker, detector_options=options)

    def health(self) -> dict:
        """Whether the model answers: one forward pass on a blank 64x64 face (milliseconds on a CPU), at most
        one every HEALTH_CHECK_EVERY_S; calls between get its answer (the endpoint is outside the queue's
        concurrency limit, and a flood of checks must not become a flood of forward passes)."""
        with self._health_lock:
            checked, answer = self._health
            if answer is None or time.monotonic() - checked > HEALTH_CHECK_EVERY_S:
                probabilities = self.model.predict_proba([np.full((64, 64), 128, np.uint8)])
                ok = probabilities.shape == (1, len(self.model.labels)) and abs(float(probabilities.sum()) - 1) < 1e-3
                answer = {"status": "ok" if ok else "failing", "model": public_name(self.model.name)}
                self._health = (time.monotonic(), answer)
            return dict(answer)

    def describe(self, analysis: FrameAnalysis, detector: str | None = None, adapter: str | None = None,
                 key: str | None = None) -> dict:
        """The JSON answer of /analyze."""
        return {
            "faces": [face.to_dict() for face in analysis.faces],
            "model": public_name(self.model_for(adapter, key).name),
            "adapter": adapter or NO_ADAPTER,
            "detector": detector or self.settings.detector,
            "precision": "bfloat16" if self.model.bf16 else "float32",  # why figures differ by a little between servers
            "image": {"width": analysis.width, "height": analysis.height},
            "faces_not_classified": analysis.faces_not_classified,  # beyond --max-faces, the smallest
            "timings_ms": analysis.timings_ms,
        }


def public_name(model_name: str) -> str:
    """A model's name for answers and the page: a folder's name, not the server's path to it."""
    base, _, adapter = model_name.partition("+")
    name = Path(base).name if Path(base).exists() else base
    return f"{name}+{adapter}" if adapter else name


