"""From face images to model input: one preprocessing for training, evaluation and the app.

FER2013 faces are 48x48 grayscale. Every face, from the data set or cut out of a webcam
frame, goes the same way: to grayscale, resized to the model's input size, scaled to [0, 1],
normalised, repeated to 3 channels. The checkpoint's image processor config describes the
same steps (resize, rescale, normalise with equal per-channel statistics), so
`transformers.pipeline` gives the same input up to resampling details; the model itself
folds colour to luminance (see `emotion_vit.model.fold_grayscale_into_model`).
"""

from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np
import torch
from PIL import Image as PILImage


@dataclass(frozen=True)
class Preprocessing:
    """Resize and normalise faces for a model with square input `size`."""

    size: int
    mean: float = 0.5
    std: float = 0.5

    @classmethod
    def from_processor(cls, processor) -> Preprocessing:
        size = processor.size
        side = size["height"] if "height" in size else size["shortest_edge"]
        mean, std = processor.image_mean, processor.image_std
        if len(set(mean)) != 1 or len(set(std)) != 1:
            raise ValueError("emotion models work on grayscale input: the image processor must use one mean "
                             f"and one std for all channels (got mean={mean}, std={std})")
        return cls(size=int(side), mean=float(mean[0]), std=float(std[0]))

    def gray(self, face: np.ndarray) -> np.ndarray:
        """An HxW uint8 luminance image from gray, RGB or RGBA uint8 input."""
        if face.ndim == 3 and face.shape[2] == 1:
            face = face[:, :, 0]
        if face.ndim == 3:
            face = cv2.cvtColor(face, cv2.COLOR_RGBA2GRAY if face.shape[2] == 4 else cv2.COLOR_RGB2GRAY)
        return face

    def resize(self, gray: np.ndarray) -> np.ndarray:
        if gray.shape[:2] == (self.size, self.size):
            return gray
        shrinking = gray.shape[0] > self.size or gray.shape[1] > self.size
        return cv2.resize(gray, (self.size, self.size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)

    def normalize(self, resized: list[np.ndarray]) -> torch.Tensor:
        """uint8 SxS images -> float tensor (N, 3, S, S)."""
        batch = torch.from_numpy(np.stack(resized)).float().div_(255.0).sub_(self.mean).div_(self.std)
        return batch.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()

    def __call__(self, faces: list[np.ndarray]) -> torch.Tensor:
        return self.normalize([self.resize(self.gray(face)) for face in faces])


def training_augmentation(strength: float = 1.0, seed: int | None = None) -> A.Compose:
    """Augmentation for 48x48 faces: small geometric jitter, flips, lighting, occlusion.

    Faces in FER2013 are already roughly aligned, so geometry stays gentle (scale, shift and
    rotation of a few percent and degrees); lighting and occlusion (erasing) model what a
    classroom webcam adds. `strength` scales the ranges; 0 turns augmentation off. A `seed` makes
    the views repeatable (albumentations keeps its own random state, untouched by torch's or numpy's).
    """
    if strength <= 0:
        return A.Compose([])
    s = strength
    return A.Compose([
        A.Affine(scale=(1 - 0.15 * s, 1 + 0.15 * s), translate_percent=(-0.08 * s, 0.08 * s),
                 rotate=(-12 * s, 12 * s), border_mode=cv2.BORDER_REFLECT_101, p=1.0),
        A.HorizontalFlip(p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.25 * s, contrast_limit=0.25 * s, p=0.8),
        A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(0.1, 0.4), hole_width_range=(0.1, 0.4),
                        fill="random_uniform", p=0.5 * min(s, 1.0)),
    ], seed=seed)


def train_transform(preprocessing: Preprocessing, augmentation: A.Compose):
    """A `Dataset.set_transform` function: augmented, preprocessed pixel_values and labels."""
    def transform(batch):
        faces = [augmentation(image=preprocessing.gray(image_array(image)))["image"] for image in batch["image"]]
        return {"pixel_values": preprocessing(faces), "labels": torch.tensor(batch["label"])}
    return transform


def eval_transform(preprocessing: Preprocessing):
    """A `Dataset.set_transform` function without augmentation."""
    def transform(batch):
        return {"pixel_values": preprocessing([image_array(image) for image in batch["image"]]),
                "labels": torch.tensor(batch["label"])}
    return transform


def image_array(image) -> np.ndarray:
    """A data-set image (PIL or array) as a uint8 array Preprocessing accepts (gray, RGB or RGBA)."""
    if isinstance(image, PILImage.Image):
        if image.mode not in ("L", "RGB", "RGBA"):
            image = image.convert("RGB")
        return np.asarray(image)
    return np.asarray(image)


@dataclass
class BatchMixer:
    """With probability `prob`, mixes a training batch by MixUp or CutMix.

    Mixed batches carry soft labels (N, num_labels); the loss in `emotion_vit.training`
    takes both hard and soft labels. Applied in the training step only, never to evaluation.
    """

    num_labels: int
    prob: float = 0.0
    mixup_alpha: float = 0.2
    cutmix_alpha: float = 1.0

    def __call__(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.prob <= 0 or torch.rand(()) >= self.prob or len(labels) < 2:
            return pixel_values, labels
        targets = torch.nn.functional.one_hot(labels, self.num_labels).to(pixel_values.dtype)
        partner = torch.randperm(len(labels), device=labels.device)
        if torch.rand(()) < 0.5:  # MixUp: blend whole images
            lam = float(np.random.beta(self.mixup_alpha, self.mixup_alpha))
            pixel_values = lam * pixel_values + (1 - lam) * pixel_values[partner]
        else:  # CutMix: paste a box from the partner image
            lam = float(np.random.beta(self.cutmix_alpha, self.cutmix_alpha))
            height, width = pixel_values.shape[-2:]
            box_h, box_w = int(height * (1 - lam) ** 0.5), int(width * (1 - lam) ** 0.5)
            top, left = np.random.randint(0, height - box_h + 1), np.random.randint(0, width - box_w + 1)
            pixel_values = pixel_values.clone()
            pixel_values[..., top:top + box_h, left:left + box_w] = pixel_values[partner][..., top:top + box_h, left:left + box_w]
            lam = 1 - box_h * box_w / (height * width)
        return pixel_values, lam * targets + (1 - lam) * targets[partner]
