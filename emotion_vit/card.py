"""The model card (README.md) written into every model folder: metadata, metrics, recipe, limits."""

from __future__ import annotations

from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

SPLIT_NOTES = {"validation": "validation (FER2013 PublicTest when the data carries FER2013's split)",
               "test": "test (FER2013 PrivateTest when the data carries FER2013's split)"}
FLIP_TTA = "_flip_tta"  # a results key `validation_flip_tta`: the split scored with flip test-time augmentation

CARD_TEMPLATE = """---
{card_data}
---

# {title}

A face-emotion classifier for the seven FER2013 classes ({label_list}), trained with
emotion_vit and the Hugging Face Trainer.
It classifies a **cropped face**; to find faces in a photo or webcam frame first, use the
emotion_vit app or any face detector.

```python
from transformers import pipeline
classify = pipeline("image-classification", model="{model_ref}")
classify("face.jpg")  # [{{'label': 'happy', 'score': 0.93}}, ...]
```

The model reads luminance only: its first convolution weighs R, G and B by the BT.601 luma
weights, so a colour crop gives the same answer as its grayscale version (FER2013 is grayscale).

A crop larger than the training faces (`face_resolution` in preprocessor_config.json, where present:
48 for FER2013) is best reduced to that size first with area interpolation, as the emotion_vit app
does: the model learned from that much detail, and a sharp camera crop resized straight to the input
size scores about 1 point lower on PublicTest faces placed in frames.

## Results

{results_table}

One view is what `pipeline()` gives; flip TTA classifies each face and its mirror image and averages
the two probability vectors, as the emotion_vit app does by default. Confusion matrices (one view):
{confusion_links}. Reproduce each row:

```bash
{reproduce}
```

## Model

- Architecture: `{model_type}`, {parameters:.2f}M parameters, input {image_size}x{image_size}.
- Base model: {base_model}.
- Weights: {weights}.
- Labels (id: name): {id_list}.

## Training data

{data_summary}

## Recipe

{recipe}

## Intended use

Aggregate, consented, low-stakes feedback: for example a teacher watching the overall mood of a
class during a lesson, or research on expression recognition. It recognises *facial
expressions*, which are not the same as felt emotions.

## Limitations and bias

- FER2013 was collected by web image search: faces are mostly adults, skewed towards lighter
  skin tones and Western posed expressions, at 48x48 pixels in grayscale. Accuracy is lower for
  under-represented groups, children, non-frontal faces, occlusion (masks, hands) and poor light.
- The labels are noisy: people agree with FER2013's labels only about 65% of the time. Disgust
  (1.5% of the training images) and fear are recognised worst.
- **Do not use this model to make or support decisions about people** (grading, discipline,
  hiring, security, health, or any high-stakes judgement), nor to monitor people without their
  informed consent.
"""


def write_model_card(output_dir: str | Path, *, results: dict, labels: list[str], recipe: dict, data_summary: str,
                     base_model: str | None, model_type: str, parameters: int, transformers_version: str,
                     image_size: int | None = None, model_ref: str | None = None, weights: str | None = None) -> Path:
    """Write README.md with hub metadata (library, pipeline tag, data set, metrics) into output_dir."""
    output_dir = Path(output_dir)
    one_view = {split: scores for split, scores in results.items() if not split.endswith(FLIP_TTA)}
    eval_results = [  # the hub's metadata: one view, as pipeline() gives
        EvalResult(task_type="image-classification", dataset_type="fer2013", dataset_name="FER2013",
                   dataset_split=split, metric_type=metric, metric_name=name, metric_value=round(value, 4))
        for split, scores in one_view.items()
        for metric, name, value in (("accuracy", "Accuracy", scores["accuracy"]),
                                    ("f1", "Macro F1", scores["macro_f1"]))
    ]
    card_data = ModelCardData(
        library_name="transformers", pipeline_tag="image-classification", datasets=["fer2013"],
        metrics=["accuracy", "f1", "recall"], base_model=base_model, license="mit",
        tags=["emotion-recognition", "facial-expression-recognition", "vision-transformer", "emotion_vit"],
        model_name=output_dir.name, eval_results=eval_results or None)
    image_size = image_size or recipe.get("image_size", "?")
    local_base = bool(base_model) and Path(base_model).is_dir()
    if local_base:
        card_data.base_model = None  # the hub's base_model field takes hub ids only
        base_text = f"continued from the local checkpoint `{base_model}` (its recipe comes first under Recipe)"
    elif base_model:
        base_text = f"[{base_model}](https://huggingface.co/{base_model})"
    else:
        base_text = "none (trained from scratch)"
    card = CARD_TEMPLATE.format(
        card_data=card_data.to_yaml(), title=output_dir.name, label_list=", ".join(labels),
        model_ref=model_ref or output_dir.name, results_table=_results_table(results, labels),
        confusion_links=", ".join(f"[{s}](confusion_matrix_{s}.png)" for s in one_view) or "none",
        reproduce=_reproduce_commands(results, recipe.get("data", "DATA"), model_ref or output_dir.name),
        model_type=model_type, parameters=parameters / 1e6, image_size=image_size,
        base_model=base_text, weights=weights or "as trained",
        id_list=", ".join(f"{i}: {name}" for i, name in enumerate(labels)),
        data_summary="\n".join(f"- {line}" for line in data_summary.splitlines()),
        recipe=_recipe_section(recipe, base_model if local_base else None))
    card += f"\nTrained with transformers {transformers_version}.\n"
    path = output_dir / "README.md"
    ModelCard(card).save(path)
    return path


BACKBONE_CARD_TEMPLATE = """# A backbone pretrained by masked-image modelling (SimMIM)

{model_class}, pretrained without labels on {faces:,} training faces; its classification
head is untrained. Start a recipe from it: `--model_name_or_path {output_dir}`.

Validation reconstruction loss (L1 on the masked pixels of normalised faces) at each evaluation:
{losses}.

## Recipe

{recipe}
"""


def write_backbone_card(output_dir: str | Path, *, model_class: str, faces: int, losses: list[float],
                        recipe: dict) -> Path:
    """README.md of a self-supervised backbone: what it is, its loss curve, and its recipe, under the same
    "## Recipe" heading as a classifier's card, so a model trained from it lists the pretraining first."""
    path = Path(output_dir) / "README.md"
    path.write_text(BACKBONE_CARD_TEMPLATE.format(
        model_class=model_class, faces=faces, output_dir=output_dir, recipe=_recipe_yaml(recipe),
        losses=", ".join(f"{loss:.4f}" for loss in losses) or "not evaluated"))
    return path


def _recipe_yaml(recipe: dict) -> str:
    return "```yaml\n" + yaml.safe_dump(recipe, sort_keys=False).strip() + "\n```"


def _recipe_section(recipe: dict, local_base: str | None) -> str:
    """The recipe as YAML; a model continued from a local checkpoint lists that checkpoint's recipe first."""
    this = _recipe_yaml(recipe)
    base_card = Path(local_base) / "README.md" if local_base else None
    if not base_card or not base_card.is_file() or "\n## Recipe\n" not in base_card.read_text():
        return this
    earlier = base_card.read_text().split("\n## Recipe\n", 1)[1].split("\n## ", 1)[0].strip()
    return f"First, `{local_base}`:\n\n{earlier}\n\nThen, from that checkpoint, this model:\n\n{this}"


def _results_table(results: dict, labels: list[str]) -> str:
    if not results:
        return "No evaluation split."
    header = "| split | views | accuracy | macro-F1 | " + " | ".join(f"recall {n}" for n in labels) + " |"
    rule = "|---" * (4 + len(labels)) + "|"
    rows = []
    for key, scores in results.items():
        split = key.removesuffix(FLIP_TTA)
        views = "flip TTA" if key.endswith(FLIP_TTA) else "one"
        rows.append(f"| {SPLIT_NOTES.get(split, split)} ({scores['num_examples']} images) | {views} | "
                    f"{scores['accuracy']:.2%} | {scores['macro_f1']:.3f} | "
                    + " | ".join(f"{scores['recall'][n]:.2%}" for n in labels) + " |")
    return "\n".join([header, rule, *rows])


def _reproduce_commands(results: dict, data: str, model_ref: str) -> str:
    return "\n".join(
        f"python train.py evaluate --model {model_ref} --data {data} --split {key.removesuffix(FLIP_TTA)}"
        + (" --flip-tta" if key.endswith(FLIP_TTA) else "") for key in results) or "# no evaluation split"
