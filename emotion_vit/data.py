"""Face-emotion data from any of its usual homes, as one `datasets.DatasetDict`.

Sources, chosen by what `source` names:

* an image-folder tree (``train/<class>/``, ``test/<class>/``, or just ``<class>/``), as a
  folder or as a .zip/.tar archive: the Kaggle FER2013 layout;
* the original ``fer2013.csv`` (columns emotion, pixels, Usage);
* a data set on the Hugging Face hub (or a local data set folder) by name.

Every result has the columns ``image`` (a PIL image) and ``label`` (a ClassLabel in the
canonical FER2013 order of `emotion_vit.labels.EMOTIONS`), and the splits train, validation
and, where the source has one, test. FER2013's own split survives: file names that carry it
(``Training_``, ``PublicTest_``, ``PrivateTest_``) or the CSV's Usage column give train /
validation (PublicTest) / test (PrivateTest); otherwise a seeded, stratified split is made.
"""

from __future__ import annotations

import io
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, DownloadManager, Features, Image, Value, load_dataset
from PIL import Image as PILImage
from tqdm.auto import tqdm

from .images import IMAGE_SUFFIXES
from .labels import EMOTIONS, UnknownLabelError, canonical_label

logger = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
# FER2013 file names carry the original split; PublicTest is the validation set by convention.
SPLIT_BY_PREFIX = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}
SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
                 "val": "validation", "dev": "validation", "test": "test", "testing": "test",
                 "publictest": "validation", "privatetest": "test"}


class BadImageError(ValueError):
    """One or more images could not be decoded."""


@dataclass
class DataOptions:
    """How to read a source. The defaults fit FER2013 in any of its layouts. Training's data flags are
    these fields (`DataArguments` extends this class), so each is declared here once."""

    image_column: str | None = field(default=None, metadata={
        "help": "Hub data sets: the image column (unset: tries image, img, pixel_values)."})
    label_column: str | None = field(default=None, metadata={
        "help": "Hub data sets: the label column (unset: tries label, labels, emotion)."})
    hub_config: str | None = field(default=None, metadata={"help": "Hub data sets: the configuration name."})
    skip_bad_images: bool = field(default=False, metadata={
        "help": "Skip and count unreadable images instead of stopping at the first, named."})
    validation_fraction: float = field(default=0.1, metadata={
        "help": "Stratified validation share when the source has no validation split."})
    split_seed: int = field(default=42, metadata={"help": "Seed of that stratified validation split."})
    exclude_labels: list[str] = field(default_factory=list, metadata={
        "help": "Classes to leave out (held-out-class studies)."})


def load_emotion_dataset(source: str | os.PathLike, options: DataOptions | None = None) -> DatasetDict:
    """Load `source` (folder, archive, fer2013.csv, or hub name) as train/validation[/test]."""
    options = options or DataOptions()
    source_str = str(source)
    path = Path(source_str).expanduser()
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise FileNotFoundError(f"CSV file not found: {path}")
        splits = _from_fer_csv(path, options)
    elif source_str.lower().endswith(ARCHIVE_SUFFIXES):
        if not path.is_file():
            raise FileNotFoundError(f"archive not found: {path}")
        splits = _from_image_folder(Path(DownloadManager().extract(str(path))), options, shown_as=str(path))
    elif path.is_dir() and _holds_images(path):
        splits = _from_image_folder(path, options, shown_as=str(path))
    elif path.exists() and not path.is_dir():
        raise ValueError(f"{path}: not a folder, an archive ({', '.join(ARCHIVE_SUFFIXES)}) or a .csv file")
    else:
        splits = _from_hub(source_str, options)
    return _finish(splits, options)


# --- image folders -----------------------------------------------------------------------

def _holds_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*") if p.is_file())


def _from_image_folder(folder: Path, options: DataOptions, shown_as: str) -> DatasetDict:
    folder = _descend_single_wrapper(folder)
    loaded = load_dataset("imagefolder", data_dir=str(folder))
    rows: list[tuple[str, str, str]] = []  # (path, folder split, canonical label)
    for split_name, split in loaded.items():
        folder_names = split.features["label"].names
        canonical = {
            i: canonical_label(n, where=f"{shown_as} (label folder {n!r})") for i, n in enumerate(folder_names)
        }
        paths = [item["path"] for item in split.cast_column("image", Image(decode=False))["image"]]
        rows += [(p, split_name, canonical[i]) for p, i in zip(paths, split["label"])]
    stems = [Path(p).name.split("_", 1)[0] for p, _, _ in rows]
    if rows and all(stem in SPLIT_BY_PREFIX for stem in stems):
        assigned = [SPLIT_BY_PREFIX[stem] for stem in stems]
        logger.info("%s: split by the FER2013 file-name prefixes (PublicTest -> validation)", shown_as)
    else:
        assigned = [SPLIT_ALIASES.get(split.lower(), "train") for _, split, _ in rows]
    by_split: dict[str, dict[str, list]] = {}
    for (file_path, _, label), split in zip(rows, assigned):
        columns = by_split.setdefault(split, {"image": [], "label": []})
        columns["image"].append(file_path)
        columns["label"].append(label)
    return DatasetDict({split: _make_split(cols["image"], cols["label"]) for split, cols in by_split.items()})


def _descend_single_wrapper(folder: Path) -> Path:
    """Archives often wrap everything in one top folder (fer2013/train/...): look inside it."""
    while True:
        entries = [e for e in folder.iterdir() if not e.name.startswith((".", "__MACOSX"))]
        if len(entries) == 1 and entries[0].is_dir() and normalize_split_or_label(entries[0].name) is None:
            folder = entries[0]
        else:
            return folder


def normalize_split_or_label(name: str) -> str | None:
    """The split or emotion a folder name stands for, or None if it is neither."""
    if name.lower() in SPLIT_ALIASES:
        return SPLIT_ALIASES[name.lower()]
    try:
        return canonical_label(name)
    except UnknownLabelError:
        return None


# --- fer2013.csv -------------------------------------------------------------------------

def _from_fer_csv(path: Path, options: DataOptions) -> DatasetDict:
    import pandas as pd

    table = pd.read_csv(path)
    missing = {"emotion", "pixels"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: not a fer2013.csv (missing columns {sorted(missing)}; has {list(table.columns)})")
    images, labels, splits, bad = [], [], [], []
    for row, (emotion, pixels, usage) in enumerate(tqdm(
            zip(table["emotion"], table["pixels"], table.get("Usage", ["Training"] * len(table))),
            total=len(table), desc=f"reading {path.name}")):
        try:
            values = np.array(str(pixels).split(), dtype=np.int64)
            side = int(round(len(values) ** 0.5))
            if side * side != len(values) or side == 0 or values.min() < 0 or values.max() > 255:
                raise ValueError(f"{len(values)} pixel values do not make a square 8-bit image")
            image = PILImage.fromarray(values.astype(np.uint8).reshape(side, side), mode="L")
        except ValueError as error:
            bad.append(f"{path}: row {row + 2}: {error}")  # +2: header line, 1-based lines
            continue
        images.append(_png_bytes(image))
        labels.append(canonical_label(emotion, where=f"{path} row {row + 2}"))
        splits.append(SPLIT_BY_PREFIX.get(str(usage), "train"))  # Usage values are the file-name prefixes
    _report_bad(bad, options)
    out = {}
    for split in ("train", "validation", "test"):
        picks = [i for i, s in enumerate(splits) if s == split]
        if picks:
            out[split] = _make_split([{"bytes": images[i], "path": None} for i in picks], [labels[i] for i in picks])
    return DatasetDict(out)


def _png_bytes(image: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# --- hub data sets -----------------------------------------------------------------------

def _from_hub(name: str, options: DataOptions) -> DatasetDict:
    try:
        loaded = load_dataset(name, options.hub_config)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"{name!r} is neither a local folder, archive or .csv, nor a data set on the hub ({error})") from error
    if isinstance(loaded, Dataset):
        loaded = DatasetDict({"train": loaded})
    out = {}
    for split_name, split in loaded.items():
        target = SPLIT_ALIASES.get(split_name.lower())
        if target is None:
            logger.warning("%s: ignoring split %r (not train/validation/test)", name, split_name)
            continue
        image_column = _pick_column(split, options.image_column, ("image", "img", "pixel_values"), name)
        label_column = _pick_column(split, options.label_column, ("label", "labels", "emotion"), name)
        feature = split.features[label_column]
        raw = split[label_column]
        names = [feature.int2str(v) for v in raw] if isinstance(feature, ClassLabel) else raw
        labels = [canonical_label(v, where=f"{name} column {label_column!r}") for v in names]
        images = split.cast_column(image_column, Image(decode=False))[image_column]
        out[target] = _make_split(images, labels)
    if not out:
        raise ValueError(f"{name}: no train/validation/test split found (has {list(loaded)})")
    return DatasetDict(out)


def _pick_column(split: Dataset, wanted: str | None, candidates: tuple[str, ...], name: str) -> str:
    if wanted is not None:
        if wanted not in split.column_names:
            raise ValueError(f"{name}: no column {wanted!r} (columns: {split.column_names})")
        return wanted
    for candidate in candidates:
        if candidate in split.column_names:
            return candidate
    raise ValueError(f"{name}: none of the columns {candidates} found (columns: {split.column_names}); "
                     f"name yours with image_column / label_column")


# --- shared steps --------------------------------------------------------------------------

def _make_split(images: list, labels: list[str]) -> Dataset:
    """A split in the common schema; labels still as canonical names here."""
    return Dataset.from_dict({"image": images, "label": labels},
                             features=Features({"image": Image(decode=False), "label": Value("string")}))


def _finish(splits: DatasetDict, options: DataOptions) -> DatasetDict:
    """Check images, drop excluded classes, encode labels, and make any split the source lacks."""
    labels = tuple(name for name in EMOTIONS if name not in {canonical_label(x) for x in options.exclude_labels})
    class_label = ClassLabel(names=list(labels))
    bad: list[str] = []
    out = {}
    for split_name, split in splits.items():
        keep = [i for i, name in enumerate(split["label"]) if name in labels]
        split = split.select(keep) if len(keep) < len(split) else split
        readable = _readable_rows(split, bad)
        if len(readable) < len(split):
            split = split.select(readable)
        split = split.cast_column("label", class_label).cast_column("image", Image())
        out[split_name] = split
    _report_bad(bad, options)
    out = DatasetDict(out)
    if "train" not in out:
        raise ValueError(f"no training images found (splits: {list(out)})")
    if "validation" not in out:
        out["train"], out["validation"] = _carve_validation(out["train"], options)
    return DatasetDict({k: out[k] for k in ("train", "validation", "test") if k in out})


def _carve_validation(train: Dataset, options: DataOptions) -> tuple[Dataset, Dataset]:
    """A seeded validation split, stratified by class when every class has at least 2 images."""
    counts = Counter(train["label"])
    size = max(round(options.validation_fraction * len(train)), len(counts))  # room for every class
    if size >= len(train):
        raise ValueError(f"too few training images ({len(train)}) to hold out a validation split")
    stratify = min(counts.values()) >= 2 and len(train) - size >= len(counts)
    if not stratify:
        logger.warning("a class has fewer than 2 images: validation split is random, not stratified")
    carved = train.train_test_split(test_size=size, seed=options.split_seed,
                                    stratify_by_column="label" if stratify else None)
    logger.info(
        "made a %svalidation split of %d images (seed %d)", "stratified " if stratify else "", size, options.split_seed
    )
    return carved["train"], carved["test"]


def _readable_rows(split: Dataset, bad: list[str]) -> list[int]:
    """Indices of rows whose image decodes; the others are described in `bad` by path."""
    readable = []
    for i, item in enumerate(tqdm(split["image"], desc="checking images", leave=False, mininterval=2)):
        try:
            with PILImage.open(io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"]) as image:
                image.load()
            readable.append(i)
        except Exception as error:  # PIL raises many types for broken files
            bad.append(f"{item.get('path') or f'row {i}'}: {type(error).__name__}: {error}")
    return readable


def _report_bad(bad: list[str], options: DataOptions) -> None:
    if not bad:
        return
    listing = "\n  ".join(bad[:20]) + (f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else "")
    if not options.skip_bad_images:
        raise BadImageError(f"{len(bad)} unreadable image(s):\n  {listing}\n"
                            f"Fix or remove them, or pass --skip_bad_images to skip and count them.")
    logger.warning("skipped %d unreadable image(s):\n  %s", len(bad), listing)


def describe(dataset: DatasetDict) -> str:
    """Per-split, per-class counts, for logs and model cards."""
    lines = []
    for split_name, split in dataset.items():
        names = split.features["label"].names
        counts = Counter(split["label"])
        lines.append(f"{split_name}: {len(split)} images (" +
                     ", ".join(f"{names[i]} {counts.get(i, 0)}" for i in range(len(names))) + ")")
    return "\n".join(lines)


def face_resolution(split: Dataset, sample: int = 500) -> int:
    """The typical side, in pixels, of the faces in `split` (the median shorter side of its first `sample`
    images): 48 for FER2013. Saved with the model, so larger faces are first reduced to this much detail."""
    images = split.select(range(min(sample, len(split))))["image"]
    return int(np.median([min(image.size) for image in images]))
