"""Data sources, label mapping and bad-data errors."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FER_ZIP, pattern_face, write_fer_csv, write_image_folder, zip_folder
from datasets import ClassLabel, Dataset, Features
from datasets import Image as ImageFeature

from emotion_vit.data import BadImageError, DataOptions, load_emotion_dataset
from emotion_vit.labels import EMOTIONS, UnknownLabelError, canonical_label, label_maps


def test_canonical_order_is_fer2013_codes():
    assert EMOTIONS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    id2label, label2id = label_maps()
    assert id2label[0] == "angry" and id2label[6] == "neutral" and label2id["surprise"] == 5


@pytest.mark.parametrize("spelling, expected", [
    ("Happiness", "happy"), ("surprised", "surprise"), ("anger", "angry"), ("Sadness", "sad"),
    ("fearful", "fear"), ("disgusted", "disgust"), ("NEUTRAL", "neutral"), ("3", "happy"), (5, "surprise")])
def test_label_variants_map_to_canonical(spelling, expected):
    assert canonical_label(spelling) == expected


def test_unknown_label_names_it():
    with pytest.raises(UnknownLabelError, match="'bored'"):
        canonical_label("bored")


def test_kaggle_zip_splits_by_file_name_prefix(kaggle_zip):
    dataset = load_emotion_dataset(kaggle_zip)
    assert set(dataset) == {"train", "validation", "test"}
    assert len(dataset["train"]) == 42 and len(dataset["validation"]) == 14 and len(dataset["test"]) == 14
    assert dataset["train"].features["label"].names == list(EMOTIONS)
    # Folders sort alphabetically (angry, disgust, fear, happy, neutral, sad, surprise): the
    # labels must follow the image content, i.e. the pattern of its true class.
    for row in dataset["validation"]:
        expected = np.asarray(pattern_face(row["label"], 0))
        assert row["image"].size == (48, 48)
        assert _stripe_correlation(np.asarray(row["image"]), expected) > 0.5


def _stripe_correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def test_folder_with_variant_names_and_no_prefixes_gets_stratified_validation(tmp_path):
    names = {"happy": "happiness", "surprise": "surprised", "angry": "anger", "sad": "sadness"}
    root = write_image_folder(tmp_path / "faces", {label: 10 for label in EMOTIONS}, {"train": "x", "test": "x"},
                              folder_names=names, prefix=False)
    dataset = load_emotion_dataset(root, DataOptions(validation_fraction=0.2, split_seed=3))
    assert set(dataset) == {"train", "validation", "test"}
    assert len(dataset["validation"]) == 14 and len(dataset["train"]) == 56 and len(dataset["test"]) == 70
    assert sorted(set(dataset["validation"]["label"])) == list(range(7))  # stratified: every class
    again = load_emotion_dataset(root, DataOptions(validation_fraction=0.2, split_seed=3))
    assert dataset["validation"]["label"] == again["validation"]["label"]  # seeded


def test_flat_class_folders_without_splits(tmp_path):
    root = write_image_folder(tmp_path / "flat", {"happy": 10, "sad": 10}, {".": "x"}, prefix=False)
    dataset = load_emotion_dataset(root)
    assert set(dataset) == {"train", "validation"}
    assert set(dataset["train"]["label"]) == {EMOTIONS.index("happy"), EMOTIONS.index("sad")}


def test_archive_with_a_wrapping_top_folder(tmp_path):
    write_image_folder(tmp_path / "src" / "fer2013", {label: 3 for label in EMOTIONS}, {"train": "Training"})
    write_image_folder(tmp_path / "src" / "fer2013", {label: 1 for label in EMOTIONS}, {"test": "PublicTest"}, seed=1)
    dataset = load_emotion_dataset(zip_folder(tmp_path / "src", tmp_path / "wrapped.zip"))
    assert len(dataset["train"]) == 21 and len(dataset["validation"]) == 7


def test_unknown_label_folder_is_an_error_naming_it(tmp_path):
    root = write_image_folder(tmp_path / "faces", {"happy": 3}, {"train": "Training"})
    (root / "train" / "bored").mkdir()
    pattern_face(0, 1).save(root / "train" / "bored" / "Training_9.jpg")
    with pytest.raises(UnknownLabelError, match="bored"):
        load_emotion_dataset(root)


def test_unreadable_image_fails_with_its_path_or_is_skipped_and_counted(tmp_path, caplog):
    root = write_image_folder(tmp_path / "faces", {label: 4 for label in EMOTIONS}, {"train": "Training"})
    broken = root / "train" / "fear" / "Training_broken.jpg"
    broken.write_bytes(b"this is not a jpeg")
    with pytest.raises(BadImageError, match="Training_broken.jpg"):
        load_emotion_dataset(root)
    dataset = load_emotion_dataset(root, DataOptions(skip_bad_images=True))
    assert len(dataset["train"]) + len(dataset["validation"]) == 28
    assert "skipped 1 unreadable image" in caplog.text


def test_fer_csv_uses_the_usage_column(tmp_path):
    path = write_fer_csv(tmp_path / "fer2013.csv", {"Training": 21, "PublicTest": 7, "PrivateTest": 7})
    dataset = load_emotion_dataset(path)
    assert {k: len(v) for k, v in dataset.items()} == {"train": 21, "validation": 7, "test": 7}
    assert dataset["train"][3]["label"] == 3 and dataset["train"][3]["image"].size == (48, 48)


def test_fer_csv_bad_row_is_reported_with_its_line(tmp_path):
    path = write_fer_csv(tmp_path / "fer2013.csv", {"Training": 14})
    lines = path.read_text().splitlines()
    lines[5] = "2,1 2 3,Training"  # 3 pixels: not a square image
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadImageError, match="row 6"):
        load_emotion_dataset(path)
    skipped = load_emotion_dataset(path, DataOptions(skip_bad_images=True))
    assert len(skipped["train"]) + len(skipped["validation"]) == 13


def test_fer_csv_missing_columns_is_a_clear_error(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a fer2013.csv"):
        load_emotion_dataset(path)


def test_hub_style_dataset_with_column_mapping(tmp_path):
    """A data set in the hub's format (parquet + ClassLabel), read through load_dataset by path."""
    names = ["Anger", "Happiness", "Surprised"]
    images = [pattern_face(i % 3, i) for i in range(30)]
    table = Dataset.from_dict({"img": images, "emotion": [i % 3 for i in range(30)]},
                              features=Features({"img": ImageFeature(), "emotion": ClassLabel(names=names)}))
    folder = tmp_path / "hub_dataset"
    folder.mkdir()
    table.to_parquet(str(folder / "train.parquet"))
    dataset = load_emotion_dataset(str(folder), DataOptions(image_column="img", label_column="emotion"))
    assert set(dataset) == {"train", "validation"}
    all_labels = set(dataset["train"]["label"]) | set(dataset["validation"]["label"])
    assert all_labels == {EMOTIONS.index("angry"), EMOTIONS.index("happy"), EMOTIONS.index("surprise")}
    with pytest.raises(ValueError, match="no column 'pixels'"):
        load_emotion_dataset(str(folder), DataOptions(image_column="pixels", label_column="emotion"))


def test_exclude_labels_drops_a_class_and_renumbers(kaggle_zip):
    dataset = load_emotion_dataset(kaggle_zip, DataOptions(exclude_labels=["surprise"]))
    names = dataset["train"].features["label"].names
    assert names == ["angry", "disgust", "fear", "happy", "sad", "neutral"]
    assert len(dataset["train"]) == 36 and max(dataset["train"]["label"]) == 5


def test_missing_sources_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_emotion_dataset(tmp_path / "nope.zip")
    with pytest.raises(FileNotFoundError):
        load_emotion_dataset(tmp_path / "nope.csv")
    not_data = tmp_path / "notes.txt"
    not_data.write_text("hello")
    with pytest.raises(ValueError, match="not a folder"):
        load_emotion_dataset(not_data)


@pytest.mark.skipif(not FER_ZIP.is_file(), reason="../shared/data/fer2013.zip is absent")
def test_shared_fer2013_zip():
    dataset = load_emotion_dataset(FER_ZIP)
    assert len(dataset["train"]) == 28709 and len(dataset["validation"]) == 3589
    counts = np.bincount(dataset["validation"]["label"], minlength=7)
    assert counts.tolist() == [467, 56, 496, 895, 653, 415, 607]  # angry..neutral in FER2013 code order


def test_poor_camera_degrades_a_share_of_faces_reproducibly():
    from emotion_vit.transforms import training_augmentation
    faces = [np.asarray(pattern_face(i % 7, i)) for i in range(40)]
    clean = training_augmentation(1.0, seed=3)
    degraded = training_augmentation(1.0, seed=3, camera=1.0)
    again = training_augmentation(1.0, seed=3, camera=1.0)
    views = [degraded(image=face)["image"] for face in faces]
    assert all(v.shape == f.shape and v.dtype == np.uint8 for v, f in zip(views, faces))
    assert all(np.array_equal(v, again(image=face)["image"]) for v, face in zip(views, faces))
    clean_views = [clean(image=face)["image"] for face in faces]  # the same draws, without the camera
    changed = [not np.array_equal(v, c) for v, c in zip(views, clean_views)]
    assert sum(changed) >= 0.8 * len(faces)  # each of its five parts is drawn on its own: few faces escape all
    assert np.mean(views) < np.mean(clean_views) - 5  # the dim room's gamma and brightness only darken
    assert len(clean.transforms) + 1 == len(degraded.transforms)  # off unless asked for


def test_each_dataloader_worker_and_epoch_draws_its_own_augmentations():
    """Forked workers share the parent's augmentation generator unless reseeded: without the reseed both
    workers, every epoch, give the same face the same views."""
    import torch

    from emotion_vit.transforms import Preprocessing, seed_augmentation, train_transform, training_augmentation
    face = pattern_face(3, 0)
    dataset = Dataset.from_dict({"image": [face] * 8, "label": [0] * 8})
    augmentation = training_augmentation(1.0)
    seed_augmentation(augmentation, 42)
    dataset.set_transform(train_transform(Preprocessing(64), augmentation))
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2)
    (first, second), (again, _) = ([batch["pixel_values"] for batch in loader] for _ in range(2))
    assert not torch.equal(first, second)  # worker 0's batch against worker 1's: the same face eight times
    assert not torch.equal(first, again)  # worker 0 in the first epoch and the second
    torch.manual_seed(0)
    assert torch.equal(next(iter(loader))["pixel_values"], first)  # torch's seed still decides: reproducible
