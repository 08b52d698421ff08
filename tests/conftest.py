"""Shared fixtures: tiny face-emotion data sets the tests make themselves, in every layout we read.

The images are 48x48 grayscale like FER2013, and each class has its own stripe pattern plus
noise, so a tiny model can learn them in a few steps and a broken pipeline shows up as chance.
"""

from __future__ import annotations

import os
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emotion_vit.labels import EMOTIONS

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FER_ZIP = SHARED / "data" / "fer2013.zip"
SHARED_IMAGES = SHARED / "images"
YUNET_ONNX = SHARED / "models" / "face_detection_yunet_2023mar.onnx"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a test server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pattern_face(label_id: int, seed: int, size: int = 48) -> Image.Image:
    """A 48x48 grayscale image whose stripe orientation and frequency encode the class."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    angle = np.pi * label_id / len(EMOTIONS)
    wave = np.sin(2 * np.pi * (2 + label_id) * (x * np.cos(angle) + y * np.sin(angle)))
    pixels = 128 + 90 * wave + rng.normal(0, 20, (size, size))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")


def write_image_folder(root: Path, per_class: dict[str, int], split_dirs: dict[str, str] | None = None,
                       folder_names: dict[str, str] | None = None, prefix: bool = True, seed: int = 0) -> Path:
    """Kaggle layout: root/<split dir>/<class folder>/<Prefix>_<n>.jpg.

    split_dirs maps a folder (train, test) to the FER2013 prefix its files get (Training,
    PublicTest, PrivateTest); folder_names renames class folders (e.g. happy -> happiness).
    """
    split_dirs = split_dirs or {"train": "Training", "test": "PublicTest"}
    counter = seed * 100000
    for split_dir, file_prefix in split_dirs.items():
        for label, count in per_class.items():
            folder = root / split_dir / (folder_names or {}).get(label, label)
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(count):
                counter += 1
                name = f"{file_prefix}_{counter}.jpg" if prefix else f"img{counter}.jpg"
                pattern_face(EMOTIONS.index(label), counter).save(folder / name, quality=95)
    return root


def zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder))
    return archive


def write_fer_csv(path: Path, rows_per_usage: dict[str, int]) -> Path:
    """The original fer2013.csv: emotion (0-6), pixels (2304 space-separated values), Usage."""
    lines = ["emotion,pixels,Usage"]
    n = 0
    for usage, count in rows_per_usage.items():
        for i in range(count):
            label_id = i % len(EMOTIONS)
            pixels = np.asarray(pattern_face(label_id, n)).ravel()
            lines.append(f"{label_id},{' '.join(map(str, pixels))},{usage}")
            n += 1
    path.write_text("\n".join(lines) + "\n")
    return path


TINY_VIT = {"patch_size": 8, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 64}


def save_tiny_vit(folder: Path, seed: int = 0) -> Path:
    """An untrained tiny ViT saved as a model folder (48 px): for tests of mechanics, not accuracy."""
    import torch

    from emotion_vit.model import build_image_processor, build_model
    torch.manual_seed(seed)
    build_model(model_type="vit", model_config=TINY_VIT).save_pretrained(folder)
    build_image_processor(48).save_pretrained(folder)
    return Path(folder)


@pytest.fixture
def kaggle_zip(tmp_path) -> Path:
    """FER2013-style zip: train/ (Training_*) and test/ (PublicTest_* and PrivateTest_*)."""
    root = tmp_path / "kaggle"
    per_class = {label: 6 for label in EMOTIONS}
    write_image_folder(root, per_class, {"train": "Training"})
    write_image_folder(root, {label: 2 for label in EMOTIONS}, {"test": "PublicTest"}, seed=1)
    write_image_folder(root, {label: 2 for label in EMOTIONS}, {"test": "PrivateTest"}, seed=2)
    return zip_folder(root, tmp_path / "fer_small.zip")


@pytest.fixture(scope="session")
def learnable_zip(tmp_path_factory) -> Path:
    """Enough pattern images (30 per class) for a tiny model to learn in one short run."""
    tmp = tmp_path_factory.mktemp("learnable")
    root = tmp / "faces"
    write_image_folder(root, {label: 30 for label in EMOTIONS}, {"train": "Training"})
    write_image_folder(root, {label: 8 for label in EMOTIONS}, {"test": "PublicTest"}, seed=1)
    return zip_folder(root, tmp / "faces.zip")
