"""The Photo tab: a photo in, every face annotated and in a table, the answer as JSON to download."""

from __future__ import annotations

from functools import partial

import gradio as gr

from ..annotate import draw_faces
from ..images import read_image
from ..report import write_answer_json
from ..service import NO_ADAPTER, EmotionService, public_name
from .controls import FACE_TABLE_COLUMNS, INFERENCE, Controls, adapter_legend, color_legend, face_rows
from .uploads import UploadedImage, refuse, score_threshold_value


def photo_step(service: EmotionService, path, detector, threshold, align, adapter, key):
    """Annotated photo, face table, a one-line summary and the JSON answer; all cleared without a photo."""
    if not path:
        return None, [], "", gr.update(value=None, visible=False)
    try:
        image = read_image(path)
        analysis = service.analyze(image, detector=detector, score_threshold=score_threshold_value(threshold),
                                   align=align, adapter=adapter, key=key)
    except ValueError as error:
        raise refuse(str(error)) from None
    answer = service.describe(analysis, detector, adapter, key)
    used = f"model `{answer['model']}`" + (f", adapter **{adapter}**" if adapter and adapter != NO_ADAPTER else "")
    if analysis.faces:
        note = f"{len(analysis.faces)} face(s) found in {analysis.timings_ms['total']:.0f} ms ({used})."
        if analysis.faces_not_classified:
            note += f" {analysis.faces_not_classified} smaller face(s) left out: at most {len(analysis.faces)} a photo."
    else:
        note = f"No face found ({used}). Try a lower detection threshold, or a larger or sharper photo."
    download = gr.update(value=str(write_answer_json(answer)), visible=True)
    return draw_faces(image, analysis.faces), face_rows(analysis), note, download


def photo_tab(service: EmotionService, controls: Controls) -> None:
    gr.Markdown(f"Upload or paste a photo: every face is found and classified ({public_name(service.model.name)}).")
    with gr.Row():
        # image_mode None: Gradio hands over the uploaded file's path without decoding it; read_image decodes it once
        photo = UploadedImage(type="filepath", image_mode=None, sources=["upload", "clipboard"], label="Photo")
        annotated = gr.Image(label="Faces", interactive=False)
    legend = gr.HTML(color_legend(service.model.labels))
    with gr.Row():
        again = gr.Button("Analyze again (after changing settings)", size="sm")
        download = gr.DownloadButton("Download JSON", visible=False, size="sm")
    note = gr.Markdown(label="Summary")
    table = gr.Dataframe(headers=FACE_TABLE_COLUMNS, label="Per-face results", interactive=False, wrap=True)
    analyze = partial(photo_step, service)
    inputs, outputs = [photo, *controls.analysis_inputs()], [annotated, table, note, download]
    # A new photo (upload, paste or clear) replaces the old result at once: never a stale answer beside it.
    photo.change(analyze, inputs, outputs, api_visibility="private", concurrency_id=INFERENCE)
    again.click(analyze, inputs, outputs, api_visibility="private", concurrency_id=INFERENCE)
    controls.adapter.change(partial(adapter_legend, service),
                            [controls.adapter, controls.key], [legend], api_visibility="private",
                            concurrency_id=INFERENCE)
