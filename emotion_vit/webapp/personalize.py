"""The Personalize tab: reference faces per label, shown as taken, and adapters built and deleted under a key.

References live in this session's memory until an adapter is built; only the adapter is saved.
"""

from __future__ import annotations

import logging
import secrets
from functools import partial
from pathlib import Path

import gradio as gr
import numpy as np

from ..adapt import AdaptError, References, check_lines, label_name
from ..images import read_image
from ..service import MIN_KEY_LENGTH, NO_ADAPTER, EmotionService
from .clients import request_network
from .controls import BUILDS, INFERENCE, Controls, adapter_lists
from .uploads import UploadedFiles, UploadedImage, refuse

logger = logging.getLogger(__name__)

# A session holds up to `max_references` faces: each kept at most this large (the model sees 48-64 px; the
# gallery shows about 100), so a 40-megapixel photo's face costs 200 KB of the server's memory, not 100 MB.
REFERENCE_MAX_SIDE = 256
MAX_SKIPPED_NOTED = 20
REFERENCES_KEPT_S = 3600  # a session's references are dropped an hour after they last changed


def reference_summary(refs: References) -> str:
    if not refs.crops:
        return "No references yet."
    counts = ", ".join(f"**{label}** {count}" for label, count in refs.counts().items())
    note = f"\n\nSkipped: {'; '.join(Path(s).name for s in refs.skipped[-5:])}" if refs.skipped else ""
    return f"{len(refs.crops)} reference face(s): {counts}.{note}"


def reference_gallery(refs: References) -> list[tuple]:
    """The face taken from each reference, captioned with its label and source: a crowd photo shows which face."""
    return [(crop, f"{label}: {source}") for crop, label, source in zip(refs.crops, refs.labels, refs.sources)]


def add_references(service: EmotionService, files=None, capture=None, label: str | None = None,
                   refs: References | None = None, detector: str | None = None, align: bool | None = None):
    """Add the largest face of each photo (and of a webcam capture) under `label`; either may be left out.
    Faces are found and cut with the visitor's detector and alignment (Settings), so a reference is cut
    as the live view will cut the faces it is to recognise; None: the server's."""
    settings = service.settings
    if align is not None and not isinstance(align, bool):  # a raw client's "false" is not a boolean
        raise refuse("align must be true or false.")
    align = settings.align if align is None else align
    refs = refs or References()
    label = label.strip() if isinstance(label, str) else ""
    if not label:
        raise refuse("Type the label these references show (an emotion, or a new one such as 'confused').")
    try:
        label_name(label)
    except ValueError as error:
        raise refuse(str(error)) from None
    files = list(files or [])
    count = len(files) + (capture is not None)
    if not count:
        raise refuse("Add one or more photos, or capture one with the webcam.")
    if len(refs.crops) + count > settings.max_references:  # counted before anything is decoded
        raise refuse(f"At most {settings.max_references} reference faces per session: build or clear first.")
    try:
        face_detector = service.detector(settings.detector if detector is None else detector)
    except ValueError as error:  # an unknown detector, or one this server cannot load
        raise refuse(str(error)) from None
    sources = [(Path(path).name, path) for path in files]
    if capture is not None:
        sources.append(("webcam capture", capture))
    found = 0
    for name, source in sources:  # one photo decoded at a time, and only its face kept
        try:
            image = source if isinstance(source, np.ndarray) else read_image(source)
        except ValueError as error:  # a broken upload is noted, the others still count
            refs.skipped.append(f"{name}: {error}")
            continue
        found += refs.add_image(image, label, name, face_detector, settings.geometry, align,
                                max_side=REFERENCE_MAX_SIDE)
    del refs.skipped[:-MAX_SKIPPED_NOTED]  # a session keeps the latest notes, not every broken upload
    if not found:
        gr.Warning("No face found in these images.")
    return refs, reference_summary(refs), reference_gallery(refs)


def clear_references():
    return References(), reference_summary(References()), []


def build(service: EmotionService, name: str, refs: References | None, key: str, client: str | None = None,
          progress=gr.Progress()):  # noqa: B008 (Gradio's progress parameter)
    """`client`: the visitor's network (clients.request_network), counted against the adapters one may hold."""
    if refs is None or not refs.crops:
        raise refuse("Add reference faces first.")
    refs = refs.copy()  # the session's references may grow while the build runs (adding runs beside builds)
    try:
        metadata = service.build_adapter(refs, name or "", key, progress=lambda f, message: progress(f, desc=message),
                                         client=client)
    except (AdaptError, ValueError) as error:
        raise refuse(str(error)) from None
    except OSError as error:  # the adapters folder (a full disk, a share gone): the operator's log, not the visitor's
        logger.warning("adapter %r not saved: %s", name, error)
        raise refuse("The server could not save the adapter: try again later.") from None
    message = (f"Adapter **{metadata['name']}** built in {metadata['seconds']:.0f} s from "
               f"{sum(metadata['references_per_label'].values())} faces; labels: {', '.join(metadata['labels'])}. "
               "It is now in use (Settings › Adapter).")
    checks = check_lines(metadata)
    if checks:
        message += "\n\nMeasured on faces it was not calibrated on:\n" + "\n".join(f"- {line}" for line in checks)
    return message, *adapter_lists(service, key, selected=metadata["name"])


def delete(service: EmotionService, name: str, key: str):
    try:
        service.delete_adapter(name, key)
    except ValueError as error:
        raise refuse(str(error)) from None
    usable, own = adapter_lists(service, key)
    return f"Deleted adapter **{name}**.", {**usable, "value": NO_ADAPTER}, own


def restore_key(service: EmotionService, stored: str | None):
    """On page load: this browser's adapter key (a new random one on a first visit) and its adapters."""
    key = stored if isinstance(stored, str) and len(stored) >= MIN_KEY_LENGTH else secrets.token_hex(16)
    return key, key, *adapter_lists(service, key)


def change_key(service: EmotionService, key: str):
    return key, *adapter_lists(service, key)


def personalize_tab(service: EmotionService, controls: Controls, stored_key: gr.BrowserState) -> gr.Dropdown:
    """The tab's layout and events; returns the dropdown of the visitor's own adapters (filled on page load)."""
    gr.Markdown(
        "Teach the model your room, your students or a new expression from a few labelled photos: "
        "pick a label (one of the 7 emotions, or a new one such as *confused*), add photos or a webcam "
        "capture, repeat for other labels, then build an adapter (under a minute). Photos stay in "
        "memory; only the adapter's weights are saved.")
    refs = gr.State(None, time_to_live=REFERENCES_KEPT_S)  # a visitor who leaves does not hold memory for ever
    with gr.Row():
        label = gr.Textbox(label="Label", placeholder="happy, surprise, confused, ...",
                           info="The expression these photos show.")
        files = UploadedFiles(file_count="multiple", file_types=["image"], label="Photos")
        capture = UploadedImage(sources=["webcam"], type="numpy", label="or capture", value=None)
    with gr.Row():
        add_button = gr.Button("Add references")
        clear_button = gr.Button("Clear references", size="sm")
    summary = gr.Markdown(reference_summary(References()), label="References")
    gallery = gr.Gallery(label="The face taken from each reference", columns=8, height=200, object_fit="contain",
                         preview=False, allow_preview=False, fit_columns=False)
    with gr.Row():
        name = gr.Textbox(label="Adapter name", placeholder="room-12", info="Letters, digits, '.', '_' or '-'.")
        build_button = gr.Button("Build adapter", variant="primary")
    result = gr.Markdown(label="Result")
    with gr.Row():
        existing = gr.Dropdown([], label="Your adapters", value=None, allow_custom_value=True)  # the service checks
        delete_button = gr.Button("Delete adapter", variant="stop", size="sm")
    controls.key.render()
    # Every step shows its progress, and an error's badge, on the Result line, which the next step
    # resets: a badge left on the reference list after a failed step outlived the next success.
    status = {"show_progress_on": result}
    add_button.click(partial(add_references, service), [files, capture, label, refs, controls.detector, controls.align],
                     [refs, summary, gallery],
                     api_name="add_references", concurrency_id=INFERENCE, **status
                     ).success(lambda: (None, None, ""), None, [files, capture, result], api_visibility="private")
    clear_button.click(clear_references, None, [refs, summary, gallery], api_name="clear_references", **status)
    def build_for_visitor(name: str, refs: References | None, key: str, request: gr.Request,
                          progress=gr.Progress()):  # noqa: B008 (Gradio finds the request by this annotation)
        return build(service, name, refs, key, request_network(request, service.settings.trusted_proxies), progress)

    build_button.click(build_for_visitor, [name, refs, controls.key], [result, controls.adapter, existing],
                       api_name="build_adapter", concurrency_id=BUILDS, concurrency_limit=1, **status)
    delete_button.click(partial(delete, service), [existing, controls.key], [result, controls.adapter, existing],
                        api_visibility="private", **status)  # the API's /delete_adapter takes any name
    controls.key.change(partial(change_key, service), [controls.key], [stored_key, controls.adapter, existing],
                        api_visibility="private")
    return existing
