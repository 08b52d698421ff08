"""The Live tab: the webcam streamed to the server, every face annotated, the class's mood over time.

Per-viewer state (face tracks, the mood timeline, pacing) lives in a `LiveSession` in `gr.State`, so
viewers never see each other's faces. Frames are analysed in memory and never stored.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial

import gradio as gr

from ..annotate import EMOTION_COLORS, draw_faces, face_ids
from ..images import as_rgb_uint8
from ..mood import MoodTimeline
from ..report import write_session_report
from ..service import EmotionService
from ..track import FaceTracker
from .controls import FACE_TABLE_COLUMNS, INFERENCE, Controls, adapter_labels, color_legend, face_rows, label_colors
from .uploads import UploadedImage, refuse

logger = logging.getLogger(__name__)
PLOT_WINDOW_S = 300  # the live plot's last minutes; the session report has the whole session
SUMMARY_EVERY_S = 1.0  # the plot, the class's current mood and the speed change slowly: redrawn once a second
FRAME_FAULT = "A frame could not be analysed and was skipped; the stream goes on."  # a fault's text stays in the log


@dataclass
class LiveSession:
    """One viewer's live state: face tracks with smoothing, the mood timeline, speed, pacing."""

    tracker: FaceTracker
    mood: MoodTimeline
    adapter: str | None = None
    last_summary: float = 0.0
    last_error: str | None = None
    frame_times: deque = field(default_factory=lambda: deque(maxlen=50))  # monotonic time of answered frames

    def warn_once(self, error: Exception) -> None:
        """Show a problem once (a toast per frame would flood the page), and log it. A refusal (ValueError:
        a bad frame or setting) is a sentence for the visitor; anything else is a fault whose text may hold
        internals, so the visitor is told only that the frame was skipped and the log gets the traceback."""
        refusal = isinstance(error, ValueError)
        message = str(error) if refusal else FRAME_FAULT
        if message != self.last_error:
            logger.warning("live frame skipped: %s", message, exc_info=not refusal)
            gr.Warning(message)
            self.last_error = message

    def frames_per_second(self) -> float:
        recent = [t for t in self.frame_times if t > time.monotonic() - 5]
        return (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0


def new_session(service: EmotionService, adapter: str | None = None, key: str | None = None) -> LiveSession:
    labels = service.model_for(adapter, key).labels
    return LiveSession(FaceTracker(smoothing=service.settings.smoothing), MoodTimeline(labels=labels),
                       adapter=adapter)


def live_step(service: EmotionService, frame, session: LiveSession | None, detector, threshold, smoothing, align,
              adapter, key):
    """One webcam frame: annotated frame, largest face, face table, and once a second the mood plot,
    the class's current mood and the speed."""
    unchanged = (gr.skip(),) * 6
    try:
        if session is None or session.adapter != adapter:  # another adapter: other labels, fresh tracks
            session = new_session(service, adapter, key)
        if frame is None:
            return *unchanged, session
        session.tracker.smoothing = float(smoothing)
        analysis = service.analyze(frame, detector=detector, score_threshold=threshold, align=align,
                                   tracker=session.tracker, live=True, adapter=adapter, key=key)
    except Exception as error:  # a bad frame or setting must never end the stream
        session = session or new_session(service)
        session.warn_once(error)
        return *unchanged, session
    session.last_error = None
    session.frame_times.append(time.monotonic())
    session.mood.add([face.label for face in analysis.faces])
    largest = gr.skip()
    if analysis.largest is not None:
        name = face_ids(analysis.faces)[0]  # the largest face comes first
        largest = gr.update(value=analysis.largest.probabilities, label=f"Largest face ({name})")
    plot = now = speed = gr.skip()
    if time.monotonic() - session.last_summary >= SUMMARY_EVERY_S:
        session.last_summary = time.monotonic()
        plot, now = session.mood.table(PLOT_WINDOW_S), session.mood.current() or None
        speed = (f"{session.frames_per_second():.1f} frames/s · {analysis.timings_ms['total']:.0f} ms per frame "
                 f"on the server · {len(analysis.faces)} face(s)")
    annotated = draw_faces(as_rgb_uint8(frame), analysis.faces)
    return annotated, largest, face_rows(analysis), plot, now, speed, session


def reset_live(service: EmotionService, adapter, key):
    return None, gr.update(value=None, label="Largest face"), [], None, None, "", new_session(service, adapter, key)


def session_report(session: LiveSession | None):
    """The class's mood over the session, as mood.csv and mood.png (shares only, never faces), shown for download."""
    if session is None:
        raise refuse("No faces seen yet: start the webcam first.")
    try:
        files = [str(path) for path in write_session_report(session.mood)]
    except ValueError as error:
        raise refuse(str(error)) from None
    return gr.update(value=files, visible=True)


def mood_colors(labels: list[str]) -> dict[str, str]:
    """The mood plot's line colours: every emotion and the model's (or adapter's) labels, as their boxes."""
    return label_colors([*EMOTION_COLORS, *labels])


def legend_and_plot_colors(service: EmotionService, adapter, key):
    """The colour legends (under the frames and the plot) and the plot's line colours for the adapter's labels."""
    labels = adapter_labels(service, adapter, key)
    legend = color_legend(labels)
    return legend, legend, gr.update(color_map=mood_colors(labels))


def live_tab(service: EmotionService, controls: Controls) -> None:
    settings = service.settings
    session = gr.State(None)
    with gr.Row():
        webcam = UploadedImage(sources=["webcam"], streaming=True, type="numpy", label="Webcam")
        annotated = gr.Image(label="Faces", format="jpeg", interactive=False)
    legend = gr.HTML(color_legend(service.model.labels))
    speed = gr.Markdown(label="Speed")
    with gr.Row():
        largest = gr.Label(num_top_classes=None, label="Largest face")  # all labels, an adapter's too
        table = gr.Dataframe(headers=FACE_TABLE_COLUMNS, label="Per-face results", interactive=False, wrap=True,
                             max_height=420)
    with gr.Row():
        # Starts empty (None): an untyped empty frame would fix the axes as categories for good.
        mood = gr.LinePlot(None, x="seconds", y="share", color="emotion", y_lim=[0, 1], height=300, scale=3,
                           color_map=mood_colors(service.model.labels),
                           colors_in_legend=[],  # Vega draws hollow markers: the filled legend below names colours
                           x_title="seconds since the first face", y_title="share of faces",
                           title="Class mood: each emotion's share, last 5 minutes")
        now = gr.Label(num_top_classes=None, label="Class mood now (last 5 s)", scale=1)
    plot_legend = gr.HTML(color_legend(service.model.labels))
    with gr.Row():
        reset = gr.Button("Reset tracks and mood", size="sm")
        report_button = gr.Button("Session report (CSV and PNG)", size="sm")
    report_files = gr.File(label="Session report: the class's mood over the session (no faces)",
                           file_count="multiple", interactive=False, visible=False)
    outputs = [annotated, largest, table, mood, now, speed, session]
    webcam.stream(partial(live_step, service), [webcam, session, controls.detector, controls.threshold,
                                                controls.smoothing, controls.align, controls.adapter, controls.key],
                  outputs, stream_every=settings.stream_every, time_limit=settings.stream_time_limit,
                  show_progress="hidden", api_visibility="undocumented", concurrency_id=INFERENCE)
    controls.adapter.change(partial(legend_and_plot_colors, service), [controls.adapter, controls.key],
                            [legend, plot_legend, mood], api_visibility="private", concurrency_id=INFERENCE)
    reset.click(partial(reset_live, service), [controls.adapter, controls.key], outputs, api_visibility="private")
    report_button.click(session_report, [session], [report_files], api_visibility="private")
