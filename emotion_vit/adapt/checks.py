"""What an adapter will do, measured when it is built, on faces its calibration did not see.

A prototype adapter:

* Leave-one-out on the references: each reference is held out, the gates are calibrated without
  its views, and the adapted model (the same `PrototypeGate`) classifies it. A label with one
  reference has no leave-one-out figure.
* How often each gate fires on the base classes' faces, per base class: the bank of faces the model did
  not train on (its validation split), where the model ships one; else the bank of training faces, two-fold
  cross-fitted (thresholds from one half, rates on the other), which understates it (unseen faces pass a
  gate more often). A label that takes many faces of some class would swallow it.

A head or confusion adapter: its references cross-validated in folds, each labelled by the model alone and by
the update trained without its fold, at half and whole strength; the smallest strength within one
standard error of the best is kept. A lora adapter: the same folds, each labelled by an adapter built
without it (a report: the adapter kept is built from every reference).

A confusion adapter: the same, with the matrix fitted without the fold mixed into the identity.

Any adapter, lora included, given labelled faces of the base classes (`train.py adapt --calibration-faces`):
the base model and the adapted one label a sample of them, as the app serves them (with the mirror); per
class, how often each labels it right and how often a new label takes its faces. LoRA moves the backbone,
so the feature bank cannot say what it does to the base classes: only real faces can.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import nn

from ..labels import EMOTIONS
from ..model import EmotionModel
from .gates import calibrate_gates, gate_layer, gate_precision
from .options import AdaptOptions

STRENGTHS = (0.0, 0.5, 1.0)  # head, confusion: the update's strengths tried on held-out references
SWALLOW_RATE = 0.10  # a gate that takes more than this share of some other class's faces gets a warning
WEAK_LEAVE_ONE_OUT = 0.5  # ... and so does a label whose held-out references come out right less often


def parsimonious_strength(shares: torch.Tensor, count: int) -> float:
    """The one-standard-error rule (Hastie, Tibshirani and Friedman, The Elements of Statistical
    Learning, 7.10): the smallest strength whose held-out share is within one standard error of the
    best's. A few dozen references are a noisy measure: an update kept for a gain of a reference or
    two cost the scored faces 1.4-2.8 points on FER2013 rooms (docs/benchmarks.md); a large gain survives.
    `shares` are the held-out shares at each of STRENGTHS."""
    best = float(shares.max())
    error = (best * (1 - best) / count) ** 0.5
    return next(s for s, share in zip(STRENGTHS, shares.tolist()) if share >= best - error)


def cross_validation_record(right: torch.Tensor, count: int, folds: int) -> dict:
    """What head and confusion keep and report: from `right`, how many of `count` held-out references
    each of STRENGTHS labelled right over `folds` folds, the strength the one-standard-error rule keeps
    (the update whole without folds) and the shares."""
    shares = right / count
    return {"folds": folds, "strength": parsimonious_strength(shares, count) if folds else 1.0,
            "held_out_right": {str(s): round(float(x), 3) for s, x in zip(STRENGTHS, shares)} if folds else {}}


def reference_folds(label_ids: torch.Tensor, folds: int) -> list[torch.Tensor]:
    """Indices of the references in each fold: each label's references dealt round the folds in turn,
    so that every fold holds out some of most labels (with one reference per label too). No folds
    for fewer than two references."""
    labels = label_ids.tolist()
    rank = [labels[:i].count(label) for i, label in enumerate(labels)]  # the how-manieth of its label
    dealt = sorted(range(len(labels)), key=lambda i: (rank[i], labels[i]))
    count = min(folds, len(dealt))
    if count < 2:
        return []
    return [torch.tensor(sorted(dealt[f::count])) for f in range(count)]


def views_of_reference(index: int, references: int, views: int) -> list[int]:
    """Which of a label's views (`label_views`: each reference and its mirror, then augmented views in
    turn) come from reference `index`."""
    return [2 * index, 2 * index + 1, *range(2 * references + index, views, references)]


def leave_one_out(views: dict[str, torch.Tensor], clean: dict[str, torch.Tensor], base: nn.Linear,
                  labels: list[str], bank, false_positive_rate: float, precision: torch.Tensor | None
                  ) -> dict[str, float | None]:
    """Per label, the share of its references the adapter labels right when calibrated without them.
    `clean` holds each label's references' raw features (no augmentation), in reference order; `precision`
    is the bank's (gate_precision)."""
    results = {}
    for label, features in clean.items():
        count = len(features)
        if count < 2:
            results[label] = None
            continue
        right = 0
        for index in range(count):
            held_out = set(views_of_reference(index, count, len(views[label])))
            kept = [i for i in range(len(views[label])) if i not in held_out]
            gates = calibrate_gates({**views, label: views[label][kept]}, bank, false_positive_rate, precision,
                                    min_negatives=1)
            with torch.no_grad():
                predicted = gate_layer(base, labels, gates)(features[index:index + 1]).argmax(-1).item()
            right += labels[predicted] == label
        results[label] = right / count
    return results


def firing_rates(views: dict[str, torch.Tensor], bank, options: AdaptOptions) -> dict[str, dict[str, float]]:
    """Per referenced label, the share of each other base class's bank faces its gate lets through."""
    if bank is None:
        return {}
    features, names = bank
    halves = [torch.arange(len(names)) % 2 == part for part in (0, 1)]
    rates: dict[str, dict[str, list[float]]] = {label: {} for label in views}
    for calibrate_on, measure_on in ((halves[0], halves[1]), (halves[1], halves[0])):
        half_bank = (features[calibrate_on], [n for n, keep in zip(names, calibrate_on.tolist()) if keep])
        gates = calibrate_gates(views, half_bank, options.false_positive_rate, gate_precision(half_bank, options),
                                min_negatives=1)
        measured = (features[measure_on], [n for n, keep in zip(names, measure_on.tolist()) if keep])
        for label, shares in _shares_let_through(gates, measured).items():
            for name, share in shares.items():
                rates[label].setdefault(name, []).append(share)
    return {label: {name: round(sum(r) / len(r), 3) for name, r in by_name.items()} for label, by_name in rates.items()}


def unseen_rates(gates: dict, unseen: tuple[torch.Tensor, list[str]]) -> dict[str, dict[str, float]]:
    """Per gate (as calibrated, on the whole training bank), the share of each other class's faces of the
    unseen bank it lets through: no cross-fitting needed, these faces calibrated nothing."""
    return {label: {name: round(share, 3) for name, share in shares.items()}
            for label, shares in _shares_let_through(gates, unseen).items()}


def _shares_let_through(gates: dict, faces: tuple[torch.Tensor, list[str]]) -> dict[str, dict[str, float]]:
    """Per gate, the share of each other class's `faces` (unit features, names) that pass its threshold."""
    features, names = faces
    shares = {}
    for label, (prototype, threshold, _) in gates.items():
        passing = (features @ prototype > threshold).tolist()
        shares[label] = {name: sum(p for p, n in zip(passing, names) if n == name) / names.count(name)
                         for name in dict.fromkeys(names) if name != label}
    return shares


def warnings_for(label: str, loo: float | None, fires_on: dict[str, float]) -> list[str]:
    notes = []
    swallowed = {name: rate for name, rate in fires_on.items() if rate > SWALLOW_RATE}
    if swallowed:
        listed = ", ".join(f"{rate:.0%} of {name}" for name, rate in sorted(swallowed.items(), key=lambda x: -x[1]))
        notes.append(f"{label!r} would take {listed} faces: add more varied references, or other labels")
    if loo is not None and loo < WEAK_LEAVE_ONE_OUT:
        notes.append(f"{label!r}: only {loo:.0%} of its references are recognised when left out: add more")
    return notes


def strength_lines(cross_validation: dict) -> list[str]:
    """The cross-validation of head or confusion: a line, and a warning where the update was dropped."""
    if not cross_validation.get("folds"):
        return []
    right = cross_validation["held_out_right"]
    if "per_label" in cross_validation:  # lora: a report, nothing kept or dropped
        labels = ", ".join(f"{label} {share:.0%}" for label, share in cross_validation["per_label"].items())
        return [f"references held out in {cross_validation['folds']} folds, labelled right by: the model alone "
                f"{right['0.0']:.0%}, adapters built without them {right['1.0']:.0%} ({labels})"]
    named = {"0.0": "the model alone", "0.5": "half the update", "1.0": "the whole update"}
    scores = ", ".join(f"{named.get(s, s)} {share:.0%}" for s, share in right.items())
    lines = [f"references held out in {cross_validation['folds']} folds, labelled right by: {scores}; "
             f"kept at strength {cross_validation['strength']}"]
    if cross_validation["strength"] == 0:
        lines.append("warning: the update labelled held-out references no better than the model alone, so the "
                     "adapter changes nothing: add references of faces the model gets wrong")
    return lines


def calibration_sample(faces, per_class: int, seed: int = 0):
    """Up to `per_class` faces of each class of a split (a `datasets.Dataset`), seeded."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(faces["label"])
    picks = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return faces.select(np.sort(np.concatenate(picks)).tolist())


def load_calibration_faces(source: str, split: str, base_labels: list[str]):
    """The faces of the base model's classes in `split` of a data source (classes it lacks left out)."""
    from ..data import DataOptions, load_emotion_dataset  # training-side packages: not in the app's image
    others = [name for name in EMOTIONS if name not in base_labels]
    splits = load_emotion_dataset(source, DataOptions(exclude_labels=others))
    if split not in splits:
        raise FileNotFoundError(f"no {split!r} split in {source} (it has {', '.join(splits)})")
    return splits[split]


def check_on_faces(base: EmotionModel, adapted: EmotionModel, faces, per_class: int = 100, seed: int = 0) -> dict:
    """`calibration_record` of an adapted model on up to `per_class` faces of each class of `faces` (a split
    of the base model's classes), both models with the mirror, as the app serves them."""
    from ..evaluation import score_split  # training-side packages: not in the app's image
    sample = calibration_sample(faces, per_class, seed)
    before = score_split(replace(base, flip_tta=True), sample, desc="calibration faces, the base model")
    after = score_split(replace(adapted, flip_tta=True), sample, desc="calibration faces, with the adapter")
    new_labels = [name for name in adapted.labels if name not in base.labels]
    return calibration_record(before, after, adapted.labels, new_labels)


def calibration_record(before: dict, after: dict, labels: list[str], new_labels: list[str]) -> dict:
    """What the adapter did to labelled faces of the base classes: `before` and `after` are the base
    model's and the adapted model's scores on them (`emotion_vit.evaluation.score_split`), `labels` the
    adapted model's (the base's first)."""
    counts = np.asarray(after["confusion_matrix"])
    faces = counts.sum(axis=1)
    classes = {}
    for i, name in enumerate(labels):
        if faces[i]:
            classes[name] = {
                "faces": int(faces[i]),
                "right_before": round(before["recall"][name], 3), "right_after": round(after["recall"][name], 3),
                "taken": {new: round(counts[i, labels.index(new)] / faces[i], 3) for new in new_labels}}
    return {"faces": int(faces.sum()), "right_before": round(before["accuracy"], 3),
            "right_after": round(after["accuracy"], 3), "classes": classes}


def calibration_warnings(record: dict, method: str) -> list[str]:
    """A new label that takes over SWALLOW_RATE of some class's faces; classes that lose more than that."""
    advice = ("a lower --false-positive-rate makes the gates stricter" if method == "prototype"
              else "prototype changes the base classes least")
    notes = []
    for new, taken in _taken_by_new_labels(record).items():
        over = [(share, name) for share, name in taken if share > SWALLOW_RATE]
        if over:
            listed = ", ".join(f"{name} ({share:.0%})" for share, name in over)
            notes.append(f"{new!r} takes over {SWALLOW_RATE:.0%} of the {listed} calibration faces: add more varied "
                         f"references of it; {advice}")
    lost = sorted((s["right_after"] - s["right_before"], name, s) for name, s in record["classes"].items()
                  if s["right_before"] - s["right_after"] > SWALLOW_RATE)
    if lost:
        listed = ", ".join(f"{name} {s['right_before']:.0%}->{s['right_after']:.0%}" for _, name, s in lost)
        notes.append(f"calibration faces labelled right far less often with the adapter ({listed}); {advice}")
    return notes


def calibration_lines(record: dict) -> list[str]:
    if not record:
        return []
    per_class = ", ".join(f"{name} {s['right_before']:.0%}->{s['right_after']:.0%}"
                          for name, s in record["classes"].items())
    lines = [f"calibration faces ({record['faces']}): labelled right {record['right_before']:.0%} by the base model, "
             f"{record['right_after']:.0%} with the adapter ({per_class})"]
    for new, taken in _taken_by_new_labels(record).items():
        lines.append(f"{new}: takes " + ", ".join(f"{share:.0%} of {name}" for share, name in taken[:3])
                     + " calibration faces (most-taken classes)")
    return lines


def _taken_by_new_labels(record: dict) -> dict[str, list[tuple[float, str]]]:
    """Per new label of a calibration record, (share, class) of the faces it took, most first."""
    classes = record["classes"]
    new_labels = next(iter(classes.values()), {}).get("taken", {})
    return {new: sorted(((s["taken"][new], name) for name, s in classes.items()), reverse=True) for new in new_labels}


def check_lines(metadata: dict) -> list[str]:
    """One line per gate of a built adapter (its metadata), then its warnings: for the CLI and the app."""
    lines = strength_lines(metadata.get("cross_validation", {}))
    if metadata.get("chosen_from"):  # auto in a room built both room methods
        shares = ", ".join(f"{method} {share:.0%}" for method, share in metadata["chosen_from"].items())
        lines.insert(0, f"method auto: {metadata['method']} kept (held-out references labelled right by {shares})")
    faces = {"unseen": "faces the model did not train on", "training": "the feature bank's training faces"}.get(
        metadata.get("fires_on_faces", "training"))
    for label, gate in metadata.get("gates", {}).items():
        loo = gate.get("leave_one_out")
        held_out = "leave-one-out n/a (1 reference)" if loo is None else f"leave-one-out {loo:.0%} right"
        fires = sorted(gate.get("fires_on", {}).items(), key=lambda item: -item[1])
        fired = ", ".join(f"{rate:.0%} of {name}" for name, rate in fires[:3])
        taken = f"takes {fired} {faces}" if fired else "takes: not measured (no feature bank)"
        lines.append(f"{label}: {held_out}; {taken} (most-taken classes)")
    lines += calibration_lines(metadata.get("calibration_faces", {}))
    return lines + [f"warning: {warning}" for warning in metadata.get("warnings", [])]
