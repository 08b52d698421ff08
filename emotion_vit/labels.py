"""The canonical emotion labels and the many ways data sets spell them.

FER2013's original codes fix the order: 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad,
5 surprise, 6 neutral. Every checkpoint stores this order as id2label/label2id, whatever
order a data set's folders sort in.
"""

from __future__ import annotations

import re

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# Spellings seen in public FER data sets (folder names, CSV values, hub ClassLabels).
_VARIANTS = {
    "angry": ["anger", "mad"],
    "disgust": ["disgusted", "disgusting"],
    "fear": ["fearful", "scared", "afraid"],
    "happy": ["happiness", "joy", "joyful", "smile", "smiling"],
    "sad": ["sadness", "unhappy"],
    "surprise": ["surprised", "surprising"],
    "neutral": ["neutrality"],
}
_CANONICAL_BY_SPELLING = {spelling: name for name, spellings in _VARIANTS.items() for spelling in [name, *spellings]}
_CANONICAL_BY_SPELLING.update({str(code): name for code, name in enumerate(EMOTIONS)})  # "0".."6": FER codes


class UnknownLabelError(ValueError):
    """A label (folder name, CSV value, hub class) that maps to no known emotion."""


def normalize_label(name: str) -> str:
    """Lower-case a label and drop everything but letters and digits ("Happy_Faces " -> "happyfaces")."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def canonical_label(name: str | int, where: str = "") -> str:
    """Map a spelling ("Happiness", "surprised", 3) to its canonical emotion, or raise naming it."""
    canonical = _CANONICAL_BY_SPELLING.get(normalize_label(name))
    if canonical is None:
        place = f" in {where}" if where else ""
        raise UnknownLabelError(
            f"unknown emotion label {str(name)!r}{place}; expected one of {', '.join(EMOTIONS)} "
            f"(or a variant such as happiness, surprised, anger, sadness, or a FER code 0-6)"
        )
    return canonical


def label_maps(labels: tuple[str, ...] | list[str] = EMOTIONS) -> tuple[dict[int, str], dict[str, int]]:
    """id2label and label2id for a model config, in the given (canonical) order."""
    id2label = dict(enumerate(labels))
    return id2label, {name: i for i, name in id2label.items()}
