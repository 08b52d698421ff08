"""The Gradio app: live webcam view of a class, photo analysis, and a JSON API.

`EmotionService` (emotion_vit.service) loads the model and detectors once and analyses images
for every session; `build_app` lays out the Blocks UI around it. Per-user state (face tracks, the mood timeline)
lives in `gr.State`, so sessions never see each other's faces. Frames are analysed in memory:
nothing here writes them to disk, and Gradio's own cache of served images is purged
(`delete_cache`) so hours of streaming cannot fill the disk.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd
from fastapi.responses import JSONResponse

from .adapt import AdaptError, References
from .annotate import draw_faces
from .detect import DETECTOR_BACKENDS
from .images import as_rgb_uint8, read_image
from .mood import MoodTimeline
from .pipeline import FrameAnalysis
from .service import MIN_KEY_LENGTH, NO_ADAPTER, EmotionService, public_name
from .track import FaceTracker
from .uploads import UploadedFiles, UploadedImage, refuse, score_threshold_value, uploaded_file

logger = logging.getLogger(__name__)
INFERENCE = "inference"  # the concurrency group of every handler that runs the model: one at a time
MAX_FILE_MB = 20  # uploads above this are refused by Gradio before they are stored
QUEUE_SIZE = 64  # requests waiting beyond this are refused ("queue full") instead of piling up
FACE_TABLE_COLUMNS = ["face", "emotion", "confidence", "runner-up", "box (x1, y1, x2, y2)"]


@dataclass
class LiveSession:
    """One viewer's live state: face tracks with smoothing, the mood timeline, plot pacing."""

    tracker: FaceTracker
    mood: MoodTimeline
    last_plot: float = 0.0
    adapter: str | None = None
    last_error: str | None = None

    def warn_once(self, message: str) -> None:
        """Show a problem once (a toast per frame would flood the page), and log it."""
        if message != self.last_error:
            logger.warning("live frame skipped: %s", message)
            gr.Warning(message)
            self.last_error = message


def face_rows(analysis: FrameAnalysis) -> list[list]:
    rows = []
    for face in analysis.faces:
        ranked = sorted(face.probabilities.items(), key=lambda item: item[1], reverse=True)
        runner_up = f"{ranked[1][0]} {ranked[1][1]:.0%}" if len(ranked) > 1 else ""
        rows.append([face.track_id if face.track_id is not None else "", face.label, f"{ranked[0][1]:.0%}",
                     runner_up, ", ".join(str(int(v)) for v in face.box)])
    return rows


def reference_summary(refs: References) -> str:
    if not refs.crops:
        return "No references yet."
    counts = ", ".join(f"**{label}** {count}" for label, count in refs.counts().items())
    note = f"\n\nSkipped: {'; '.join(Path(s).name for s in refs.skipped[-5:])}" if refs.skipped else ""
    return f"{len(refs.crops)} reference face(s): {counts}.{note}"


def build_app(service: EmotionService) -> gr.Blocks:
    settings = service.settings
    empty_mood = pd.DataFrame(columns=["time", "emotion", "share"])

    def new_session(adapter: str | None = None, key: str | None = None) -> LiveSession:
        labels = service.model_for(adapter, key).labels
        return LiveSession(FaceTracker(smoothing=settings.smoothing), MoodTimeline(labels=labels), adapter=adapter)

    def adapter_lists(key: str | None, selected: str | None = None):
        """Updates of the two adapter dropdowns: all `key` may use (Settings), and its own (Personalize)."""
        try:
            usable, own = service.adapter_names(key), service.own_adapter_names(key)
        except ValueError as error:
            raise refuse(str(error)) from None
        return gr.update(choices=[NO_ADAPTER, *usable]), gr.update(choices=own, value=selected)

    # --- Live ---
    def live_step(frame, session: LiveSession | None, detector, threshold, smoothing, align, adapter, key):
        """One webcam frame: annotated frame, largest face's probabilities, face table, mood plot."""
        unchanged = (gr.skip(),) * 4
        try:
            if session is None or session.adapter != adapter:  # another adapter: other labels, fresh tracks
                session = new_session(adapter, key)
            if frame is None:
                return *unchanged, session
            session.tracker.smoothing = float(smoothing)
            analysis = service.analyze(frame, detector=detector, score_threshold=threshold, align=align,
                                       tracker=session.tracker, live=True, adapter=adapter, key=key)
        except Exception as error:  # a bad frame or setting must never end the stream
            session = session or new_session()
            session.warn_once(str(error))
            return *unchanged, session
        session.last_error = None
        session.mood.add([face.label for face in analysis.faces])
        largest = analysis.largest.probabilities if analysis.largest else None
        plot = gr.skip()
        if time.monotonic() - session.last_plot >= 1.0:  # the plot changes slowly: redraw once a second
            plot, session.last_plot = session.mood.table(), time.monotonic()
        return draw_faces(as_rgb_uint8(frame), analysis.faces), largest, face_rows(analysis), plot, session

    def reset_live(adapter, key):
        return None, None, [], empty_mood, new_session(adapter, key)

    # --- Photo ---
    def photo_step(path, detector, threshold, align, adapter, key):
        if not path:
            raise refuse("Upload a photo first.")
        try:
            image = read_image(path)
            analysis = service.analyze(image, detector=detector, score_threshold=score_threshold_value(threshold),
                                       align=align, adapter=adapter, key=key)
        except ValueError as error:
            raise refuse(str(error)) from None
        note = f"{len(analysis.faces)} face(s) found in {analysis.timings_ms['total']:.0f} ms." if analysis.faces \
            else "No face found. Try a lower detection threshold, or a larger or sharper photo."
        return draw_faces(image, analysis.faces), service.describe(analysis, detector, adapter, key), note

    # --- API ---
    def analyze(
        image: gr.FileData,
        detector: str = settings.detector,
        score_threshold: float = settings.score_threshold,
        adapter: str = NO_ADAPTER,
        key: str = "",
    ) -> dict:
        """Find every face in an image and classify its emotion.

        Args:
            image: the image file (JPEG, PNG, WebP, ...; any size).
            detector: face detector, "retinaface" or "yunet".
            score_threshold: minimum detector confidence for a face (0-1).
            adapter: name of a personalised adapter, or "none" for the base model.
            key: your adapter key (16+ characters): the adapters you built under it become usable.
        Returns:
            {faces: [{box, score, label, probabilities, track_id, landmarks}], model, detector, image, timings_ms}
        """
        path = uploaded_file(image)
        if detector not in DETECTOR_BACKENDS:
            raise refuse(f"unknown detector; choose one of {', '.join(DETECTOR_BACKENDS)}")
        if not isinstance(adapter, str) or not isinstance(key, str):
            raise refuse("adapter must be an adapter's name, or \"none\"; key a text.")
        threshold = score_threshold_value(score_threshold)
        try:
            analysis = service.analyze(read_image(path), detector=detector, score_threshold=threshold,
                                       adapter=adapter, key=key)
            return service.describe(analysis, detector, adapter, key)
        except ValueError as error:
            raise refuse(str(error)) from None

    # --- Personalize: references live in this session's memory until an adapter is built ---
    def add_references(files, capture, label: str, refs: References | None):
        refs = refs or References()
        label = (label or "").strip()
        if not label:
            raise refuse("Type the label these references show (an emotion, or a new one such as 'confused').")
        images = []
        for path in files or []:
            try:
                images.append((Path(path).name, read_image(path)))
            except ValueError as error:  # a broken upload is noted, the others still count
                refs.skipped.append(f"{Path(path).name}: {error}")
        if capture is not None:
            images.append(("webcam capture", capture))
        if not images:
            raise refuse("Add one or more photos, or capture one with the webcam.")
        if len(refs.crops) + len(images) > settings.max_references:
            raise refuse(f"At most {settings.max_references} reference faces per session: build or clear first.")
        found = sum(refs.add_image(image, label, name, service.detector(settings.detector), settings.geometry)
                    for name, image in images)
        if not found:
            gr.Warning("No face found in these images.")
        return refs, reference_summary(refs), None, None

    def clear_references():
        return References(), reference_summary(References())

    def build(name: str, refs: References | None, key: str, progress=gr.Progress()):  # noqa: B008 (Gradio)
        if refs is None or not refs.crops:
            raise refuse("Add reference faces first.")
        try:
            metadata = service.build_adapter(refs, name or "", key,
                                             progress=lambda f, message: progress(f, desc=message))
        except (AdaptError, ValueError) as error:
            raise refuse(str(error)) from None
        message = (f"Adapter **{metadata['name']}** built in {metadata['seconds']:.0f} s from "
                   f"{sum(metadata['references_per_label'].values())} faces; labels: {', '.join(metadata['labels'])}. "
                   "Select it under Settings.")
        return message, *adapter_lists(key, selected=metadata["name"])

    def delete(name: str, key: str):
        try:
            service.delete_adapter(name, key)
        except ValueError as error:
            raise refuse(str(error)) from None
        usable, own = adapter_lists(key)
        return f"Deleted adapter **{name}**.", {**usable, "value": NO_ADAPTER}, own

    def list_adapters(key: str = "") -> list[str]:
        """Names of the adapters you may use: those built under your key (16+ characters), and the server's own."""
        if not isinstance(key, str):
            raise refuse("key must be a text.")
        try:
            return service.adapter_names(key)
        except ValueError as error:
            raise refuse(str(error)) from None

    def restore_key(stored: str | None):
        """On page load: this browser's adapter key (a new random one on a first visit) and its adapters."""
        key = stored if isinstance(stored, str) and len(stored) >= MIN_KEY_LENGTH else secrets.token_hex(16)
        return key, key, *adapter_lists(key)

    def change_key(key: str):
        return key, *adapter_lists(key)

    # Purge Gradio's cache of served frames every minute, keeping files at most two minutes.
    with gr.Blocks(title="emotion_vit: live face emotions", delete_cache=(60, 120)) as app:
        gr.Markdown(
            "# emotion_vit\nEvery face in the frame, with its emotion. "
            f"Model: `{public_name(service.model.name)}` ({', '.join(service.model.labels)}). "
            "Frames are analysed in memory and never stored.")
        stored_key = gr.BrowserState("", storage_key="emotion_vit_adapter_key")
        key = gr.Textbox(label="Your adapter key", type="password", max_lines=1, render=False,
                         info="Your adapters are saved under this key; only it lists, uses or deletes them. "
                              "This browser keeps it; enter it in another browser to use your adapters there.")
        with gr.Accordion("Settings", open=False):
            with gr.Row():
                detector = gr.Dropdown(list(DETECTOR_BACKENDS), value=settings.detector, label="Face detector")
                threshold = gr.Slider(0.3, 0.95, value=settings.score_threshold, step=0.05,
                                      label="Detection threshold")
                smoothing = gr.Slider(0.0, 0.95, value=settings.smoothing, step=0.05,
                                      label="Smoothing (live): weight of past frames")
                align = gr.Checkbox(value=settings.align, label="Align faces by the eyes")
                adapter = gr.Dropdown([NO_ADAPTER, *service.adapter_names()], value=NO_ADAPTER,
                                      label="Adapter (Personalize tab)")
        with gr.Tab("Live"):
            session = gr.State(None)
            with gr.Row():
                webcam = UploadedImage(sources=["webcam"], streaming=True, type="numpy", label="Webcam")
                annotated = gr.Image(label="Faces", format="jpeg", interactive=False)
            with gr.Row():
                largest = gr.Label(num_top_classes=None, label="Largest face")  # all labels, an adapter's too
                table = gr.Dataframe(headers=FACE_TABLE_COLUMNS, label="Per-face results", interactive=False, wrap=True)
            # Starts empty (None): an untyped empty frame would fix the axes as categories for good.
            mood = gr.LinePlot(None, x="time", y="share", color="emotion", y_lim=[0, 1], height=280,
                               show_label=False, title="Class mood: share of faces per emotion, last 5 minutes")
            reset = gr.Button("Reset tracks and mood", size="sm")
            webcam.stream(live_step, [webcam, session, detector, threshold, smoothing, align, adapter, key],
                          [annotated, largest, table, mood, session], stream_every=settings.stream_every,
                          time_limit=settings.stream_time_limit, show_progress="hidden",
                          api_visibility="undocumented", concurrency_id=INFERENCE)
            reset.click(
                reset_live, [adapter, key], [annotated, largest, table, mood, session], api_visibility="private"
            )
        with gr.Tab("Photo"):
            with gr.Row():
                photo = UploadedImage(type="filepath", sources=["upload", "clipboard"], label="Photo")
                photo_annotated = gr.Image(label="Faces", interactive=False)
            photo_button = gr.Button("Analyze", variant="primary")
            photo_note = gr.Markdown()
            photo_json = gr.JSON(label="Per-face results")
            photo_button.click(photo_step, [photo, detector, threshold, align, adapter, key],
                               [photo_annotated, photo_json, photo_note], api_visibility="private",
                               concurrency_id=INFERENCE)
        with gr.Tab("Personalize"):
            gr.Markdown(
                "Teach the model your room, your students or a new expression from a few labelled photos: "
                "pick a label (one of the 7 emotions, or a new one such as *confused*), add photos or a webcam "
                "capture, repeat for other labels, then build an adapter (under a minute). Photos stay in "
                "memory; only the adapter's weights are saved.")
            refs = gr.State(None)
            with gr.Row():
                ref_label = gr.Textbox(label="Label", placeholder="happy, surprise, confused, ...")
                ref_files = UploadedFiles(file_count="multiple", file_types=["image"], label="Photos")
                ref_capture = UploadedImage(sources=["webcam"], type="numpy", label="or capture")
            with gr.Row():
                add_button = gr.Button("Add references")
                clear_button = gr.Button("Clear references", size="sm")
            ref_summary = gr.Markdown(reference_summary(References()))
            with gr.Row():
                adapter_name = gr.Textbox(label="Adapter name", placeholder="room-12")
                build_button = gr.Button("Build adapter", variant="primary")
            build_note = gr.Markdown()
            with gr.Row():
                existing = gr.Dropdown(
                    [], label="Your adapters", value=None, allow_custom_value=True
                )  # the service checks
                delete_button = gr.Button("Delete adapter", variant="stop", size="sm")
            key.render()
            add_button.click(add_references, [ref_files, ref_capture, ref_label, refs],
                             [refs, ref_summary, ref_files, ref_capture], api_name="add_references",
                             concurrency_id=INFERENCE)
            clear_button.click(clear_references, None, [refs, ref_summary], api_name="clear_references")
            build_button.click(build, [adapter_name, refs, key], [build_note, adapter, existing],
                               api_name="build_adapter", concurrency_id=INFERENCE)
            delete_button.click(delete, [existing, key], [build_note, adapter, existing], api_name="delete_adapter")
            key.change(change_key, [key], [stored_key, adapter, existing], api_visibility="private")
        gr.api(analyze, api_name="analyze", concurrency_id=INFERENCE)
        gr.api(list_adapters, api_name="list_adapters")
        # Outside the model's concurrency group: a busy queue must not look like a dead server.
        gr.api(service.health, api_name="health", concurrency_limit=None)
        # The browser's key comes back, and with it the visitor's adapters, when a page (re)loads.
        app.load(restore_key, [stored_key], [stored_key, key, adapter, existing], api_visibility="private")
    return app


def launch(app: gr.Blocks, host: str, port: int, share: bool = False, max_file_mb: int = MAX_FILE_MB,
           queue_size: int = QUEUE_SIZE, **kwargs):
    """Serve `app`: one model call at a time, a bounded queue, bounded uploads."""
    return app.queue(default_concurrency_limit=1, max_size=queue_size).launch(
        server_name=host, server_port=port, share=share, show_error=True, max_file_size=f"{max_file_mb}mb",
        app_kwargs={"exception_handlers": {KeyError: unknown_endpoint}}, **kwargs)


async def unknown_endpoint(request, error: KeyError) -> JSONResponse:
    """Gradio looks event handlers up by the client's fn_index: an unknown one raises KeyError (an HTTP 500).
    On the queue's join route that is the client's mistake (404); anywhere else a server fault, said without details."""
    if request.url.path.endswith("/queue/join"):
        logger.info("refused: unknown endpoint")
        return JSONResponse({"detail": "Unknown endpoint."}, status_code=404)
    logger.error("internal error on %s", request.url.path, exc_info=error)
    return JSONResponse({"detail": "Internal error."}, status_code=500)

