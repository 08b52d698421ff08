"""The settings every tab reads (detector, threshold, smoothing, alignment, adapter, key) and the result table."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ..annotate import emotion_color, face_ids
from ..detect import DETECTOR_BACKENDS
from ..pipeline import FrameAnalysis
from ..service import NO_ADAPTER, EmotionService
from .uploads import CheckedSlider, refuse

INFERENCE = "inference"  # the concurrency group of every handler that runs the model: one at a time
# Adapter builds, one at a time, beside inference: a build (up to a minute, on its own copy of the model)
# held in the inference group stopped every visitor's live view until it finished.
BUILDS = "builds"
FACE_TABLE_COLUMNS = ["face", "emotion", "confidence", "runner-up", "box (x1, y1, x2, y2)"]


@dataclass
class Controls:
    """The Settings accordion's components, inputs of every tab."""

    detector: gr.Dropdown
    threshold: gr.Slider
    smoothing: gr.Slider
    align: gr.Checkbox
    adapter: gr.Dropdown
    key: gr.Textbox  # rendered in the Personalize tab

    def analysis_inputs(self) -> list:
        return [self.detector, self.threshold, self.align, self.adapter, self.key]


def settings_controls(service: EmotionService) -> Controls:
    """The Settings accordion, each setting explained in a line."""
    settings = service.settings
    key = gr.Textbox(label="Your adapter key", type="password", max_lines=1, render=False,
                     info="Your adapters are saved under this key; only it lists, uses or deletes them. "
                          "This browser keeps it; enter it in another browser to use your adapters there.")
    with gr.Accordion("Settings", open=False):
        with gr.Row():
            detector = gr.Dropdown(list(DETECTOR_BACKENDS), value=settings.detector, label="Face detector",
                                   info="RetinaFace finds more small and turned faces; YuNet is faster.")
            threshold = CheckedSlider(0.3, 0.95, value=settings.score_threshold, step=0.05,
                                      label="Detection threshold",
                                      info="Lower finds more faces (and more false ones); higher, only clear faces.")
            smoothing = CheckedSlider(0.0, 0.95, value=settings.smoothing, step=0.05, label="Smoothing (live)",
                                      info="Weight of past frames in each face's emotion: higher is steadier, slower.")
            align = gr.Checkbox(value=settings.align, label="Align faces by the eyes",
                                info="Rotate tilted faces upright before classifying them.")
            adapter = gr.Dropdown([NO_ADAPTER, *service.adapter_names()], value=NO_ADAPTER, label="Adapter",
                                  info="A personalised model from the Personalize tab; none: the base model.")
    return Controls(detector, threshold, smoothing, align, adapter, key)


def adapter_lists(service: EmotionService, key: str | None, selected: str | None = None):
    """Updates of the two adapter dropdowns: all `key` may use (Settings), and its own (Personalize);
    `selected` (a new adapter) becomes the one in use."""
    try:
        usable, own = service.adapter_names(key), service.own_adapter_names(key)
    except ValueError as error:
        raise refuse(str(error)) from None
    in_use = gr.update(choices=[NO_ADAPTER, *usable], **({"value": selected} if selected else {}))
    return in_use, gr.update(choices=own, value=selected)


def face_rows(analysis: FrameAnalysis) -> list[list]:
    """One row per face, named as in the annotated picture: id, emotion, confidence, runner-up, box."""
    rows = []
    for face, face_id in zip(analysis.faces, face_ids(analysis.faces)):
        ranked = sorted(face.probabilities.items(), key=lambda item: item[1], reverse=True)
        runner_up = f"{ranked[1][0]} {ranked[1][1]:.0%}" if len(ranked) > 1 else ""
        rows.append([face_id, face.label, f"{ranked[0][1]:.0%}", runner_up, ", ".join(str(int(v)) for v in face.box)])
    return rows


def label_colors(labels: list[str]) -> dict[str, str]:
    """Each label's colour as a hex string, as its boxes are drawn (plots take it in this form)."""
    return {label: "#{:02x}{:02x}{:02x}".format(*emotion_color(label)) for label in labels}


def adapter_labels(service: EmotionService, adapter, key) -> list[str]:
    """The labels the chosen adapter answers with; the base model's while it cannot be loaded."""
    try:
        return service.model_for(adapter, key).labels
    except Exception:  # an unknown or foreign adapter: the analysis refuses it, the legend keeps the base's
        return service.model.labels


def adapter_legend(service: EmotionService, adapter, key) -> str:
    """The colour legend of the chosen adapter's labels."""
    return color_legend(adapter_labels(service, adapter, key))


def color_legend(labels: list[str]) -> str:
    """HTML: each emotion's colour, as boxes and plot lines show it (small faces carry only their #id)."""
    swatches = "".join(
        f'<span style="display:inline-block;margin-right:12px"><span style="display:inline-block;width:12px;'
        f'height:12px;background:rgb{emotion_color(label)};margin-right:4px;vertical-align:middle"></span>'
        f"{label}</span>" for label in labels)
    return f'<div class="emotion-legend" style="font-size:0.9em">{swatches}</div>'
