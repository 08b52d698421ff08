"""The Gradio app: live webcam view of a class, photo analysis, and a JSON API.

`EmotionService` loads the model and detectors once and analyses images for every session;
`build_app` lays out the Blocks UI around it. Per-user state (face tracks, the mood timeline)
lives in `gr.State`, so sessions never see each other's faces. Frames are analysed in memory:
nothing here writes them to disk, and Gradio's own cache of served images is purged
(`delete_cache`) so hours of streaming cannot fill the disk.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import pandas as pd

from .annotate import draw_faces
from .detect import DETECTOR_BACKENDS, DetectorOptions, FaceDetector, create_detector
from .images import as_rgb_uint8, read_image
from .model import EmotionModel, load_emotion_model
from .mood import MoodTimeline
from .pipeline import EmotionPipeline, FrameAnalysis, PipelineOptions
from .track import FaceTracker

logger = logging.getLogger(__name__)

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "emotion-vit-fer2013"
MODEL_ENV = "EMOTION_VIT_MODEL"
FACE_TABLE_COLUMNS = ["face", "emotion", "confidence", "runner-up", "box (x1, y1, x2, y2)"]


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
    crop_margin: float = 0.15
    align: bool = False
    stream_every: float = 0.2  # seconds between webcam frames sent for analysis
    stream_time_limit: int | None = None  # seconds a live stream may run; None: as long as the page is open


class EmotionService:
    """The model and the detectors, loaded once and shared by all sessions."""

    def __init__(self, settings: AppSettings):
        self.settings = settings
        self.model: EmotionModel = load_emotion_model(settings.model)
        self._detectors: dict[str, FaceDetector] = {}
        self._lock = threading.Lock()
        self.detector(settings.detector)  # fail at start-up, not on the first frame

    def detector(self, name: str) -> FaceDetector:
        with self._lock:
            if name not in self._detectors:
                model_path = self.settings.yunet_model if name == "yunet" else None
                self._detectors[name] = create_detector(name, model_path=model_path)
            return self._detectors[name]

    def analyze(self, image, *, detector: str | None = None, score_threshold: float | None = None,
                align: bool | None = None, tracker: FaceTracker | None = None, live: bool = False) -> FrameAnalysis:
        settings = self.settings
        options = DetectorOptions(score_threshold=score_threshold or settings.score_threshold,
                                  min_face_size=settings.min_face_size,
                                  max_side=settings.max_side if live else settings.photo_max_side)
        pipeline = EmotionPipeline(self.model, self.detector(detector or settings.detector),
                                   PipelineOptions(crop_margin=settings.crop_margin,
                                                   align=settings.align if align is None else align))
        return pipeline.analyze(image, tracker=tracker, detector_options=options)

    def describe(self, analysis: FrameAnalysis, detector: str | None = None) -> dict:
        """The JSON answer of /analyze."""
        return {"faces": [face.to_dict() for face in analysis.faces],
                "model": self.model.name, "detector": detector or self.settings.detector,
                "image": {"width": analysis.width, "height": analysis.height},
                "timings_ms": analysis.timings_ms}


@dataclass
class LiveSession:
    """One viewer's live state: face tracks with smoothing, the mood timeline, plot pacing."""

    tracker: FaceTracker
    mood: MoodTimeline
    last_plot: float = 0.0


def face_rows(analysis: FrameAnalysis) -> list[list]:
    rows = []
    for face in analysis.faces:
        ranked = sorted(face.probabilities.items(), key=lambda item: item[1], reverse=True)
        runner_up = f"{ranked[1][0]} {ranked[1][1]:.0%}" if len(ranked) > 1 else ""
        rows.append([face.track_id if face.track_id is not None else "", face.label, f"{ranked[0][1]:.0%}",
                     runner_up, ", ".join(str(int(v)) for v in face.box)])
    return rows


def build_app(service: EmotionService) -> gr.Blocks:
    settings = service.settings
    labels = service.model.labels

    def new_session() -> LiveSession:
        return LiveSession(FaceTracker(smoothing=settings.smoothing), MoodTimeline(labels=labels))

    def live_step(frame, session: LiveSession | None, detector, threshold, smoothing, align):
        """One webcam frame: annotated frame, largest face's probabilities, face table, mood plot."""
        session = session or new_session()
        if frame is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), session
        session.tracker.smoothing = float(smoothing)
        try:
            analysis = service.analyze(frame, detector=detector, score_threshold=threshold, align=align,
                                       tracker=session.tracker, live=True)
        except Exception as error:  # a bad frame must never end the stream
            logger.warning("live frame skipped: %s", error)
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), session
        session.mood.add([face.label for face in analysis.faces])
        largest = analysis.largest.probabilities if analysis.largest else None
        plot = gr.skip()
        if time.monotonic() - session.last_plot >= 1.0:  # the plot changes slowly: redraw once a second
            plot, session.last_plot = session.mood.table(), time.monotonic()
        return draw_faces(as_rgb_uint8(frame), analysis.faces), largest, face_rows(analysis), plot, session

    def reset_live():
        return None, None, [], pd.DataFrame(columns=["time", "emotion", "share"]), new_session()

    def photo_step(path, detector, threshold, align):
        if not path:
            raise gr.Error("Upload a photo first.")
        try:
            image = read_image(path)
            analysis = service.analyze(image, detector=detector, score_threshold=threshold, align=align)
        except ValueError as error:
            raise gr.Error(str(error)) from error
        note = f"{len(analysis.faces)} face(s) found in {analysis.timings_ms['total']:.0f} ms." if analysis.faces \
            else "No face found. Try a lower detection threshold, or a larger or sharper photo."
        return draw_faces(image, analysis.faces), service.describe(analysis, detector), note

    def analyze(image: gr.FileData, detector: str = settings.detector, score_threshold: float = settings.score_threshold) -> dict:
        """Find every face in an image and classify its emotion.

        Args:
            image: the image file (JPEG, PNG, WebP, ...; any size).
            detector: face detector, "retinaface" or "yunet".
            score_threshold: minimum detector confidence for a face (0-1).
        Returns:
            {faces: [{box, score, label, probabilities, track_id, landmarks}], model, detector, image, timings_ms}
        """
        path = image.get("path") if isinstance(image, dict) else getattr(image, "path", image)
        if detector not in DETECTOR_BACKENDS:
            raise gr.Error(f"unknown detector {detector!r}; choose one of {', '.join(DETECTOR_BACKENDS)}")
        try:
            analysis = service.analyze(read_image(path), detector=detector, score_threshold=score_threshold)
        except ValueError as error:
            raise gr.Error(str(error)) from error
        return service.describe(analysis, detector)

    # Purge Gradio's cache of served frames every minute, keeping files at most two minutes.
    with gr.Blocks(title="emotion_vit: live face emotions", delete_cache=(60, 120)) as app:
        gr.Markdown(
            "# emotion_vit\nEvery face in the frame, with its emotion. "
            f"Model: `{Path(service.model.name).name}` ({', '.join(labels)}). "
            "Frames are analysed in memory and never stored.")
        with gr.Accordion("Settings", open=False):
            with gr.Row():
                detector = gr.Dropdown(list(DETECTOR_BACKENDS), value=settings.detector, label="Face detector")
                threshold = gr.Slider(0.3, 0.95, value=settings.score_threshold, step=0.05,
                                      label="Detection threshold")
                smoothing = gr.Slider(0.0, 0.95, value=settings.smoothing, step=0.05,
                                      label="Smoothing (live): weight of past frames")
                align = gr.Checkbox(value=settings.align, label="Align faces by the eyes")
        with gr.Tab("Live"):
            session = gr.State(None)
            with gr.Row():
                webcam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam")
                annotated = gr.Image(label="Faces", format="jpeg", interactive=False)
            with gr.Row():
                largest = gr.Label(num_top_classes=len(labels), label="Largest face")
                table = gr.Dataframe(headers=FACE_TABLE_COLUMNS, label="Faces", interactive=False, wrap=True)
            mood = gr.LinePlot(pd.DataFrame(columns=["time", "emotion", "share"]), x="time", y="share",
                               color="emotion", y_lim=[0, 1], height=260,
                               label="Class mood: share of faces per emotion, last 5 minutes")
            reset = gr.Button("Reset tracks and mood", size="sm")
            webcam.stream(live_step, [webcam, session, detector, threshold, smoothing, align],
                          [annotated, largest, table, mood, session], stream_every=settings.stream_every,
                          time_limit=settings.stream_time_limit, show_progress="hidden",
                          api_visibility="undocumented")
            reset.click(reset_live, None, [annotated, largest, table, mood, session], api_visibility="private")
        with gr.Tab("Photo"):
            with gr.Row():
                photo = gr.Image(type="filepath", sources=["upload", "clipboard"], label="Photo")
                photo_annotated = gr.Image(label="Faces", interactive=False)
            photo_button = gr.Button("Analyze", variant="primary")
            photo_note = gr.Markdown()
            photo_json = gr.JSON(label="Per-face results")
            photo_button.click(photo_step, [photo, detector, threshold, align],
                               [photo_annotated, photo_json, photo_note], api_visibility="private")
        gr.api(analyze, api_name="analyze")
    return app


def launch(app: gr.Blocks, host: str, port: int, share: bool = False, **kwargs):
    return app.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, share=share, show_error=True, **kwargs)

