"""What a visitor may send: files Gradio received as uploads, images of bounded size, sane settings.

A public app shares one server among anonymous visitors, and a client can put anything in a request:
a path on the server, a FileData without Gradio's metadata, a 2 KB JPEG header claiming 14000x14000.
The components here check a file's place and an image's header before anything is decoded, and every
refusal is one short message, the same whether or not a named file exists, logged as one line.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import os
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.data_classes import FileData, GradioRootModel, ImageData, ListFiles
from gradio.utils import get_upload_folder
from PIL import Image as PILImage

from ..images import DECODE_ERRORS, IMAGE_FORMATS, MAX_IMAGE_PIXELS, check_pixel_count

logger = logging.getLogger(__name__)

NOT_AN_UPLOAD = "Expected an image file uploaded to this app."


def refuse(message: str) -> gr.Error:
    """A short error for the visitor, logged as one line: bad input is not a server fault, so no traceback."""
    logger.info("refused: %s", message)
    return gr.Error(message, print_exception=False)


def number_in_range(value, low: float, high: float, refusal: str) -> float:
    """A client's number, as a float, if it lies in [low, high]; anything else (text, a list, NaN) is
    refused with `refusal`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise refuse(refusal) from None
    if not low <= number <= high:  # NaN fails too
        raise refuse(refusal)
    return number


def score_threshold_value(value) -> float:
    """A detection threshold from a client: a number in [0, 1] (0 keeps every candidate), else refused."""
    return number_in_range(value, 0.0, 1.0, "score_threshold must be a number from 0 to 1.")


def uploaded_file(value) -> str:
    """The server path of a file Gradio received as an upload: `value` is a FileData (dict or object) or a
    path that must lie in Gradio's upload folder. Anything else, a server path or a FileData pointing
    outside that folder, is refused with one message whether or not the file exists."""
    path = value.get("path") if isinstance(value, dict) else getattr(value, "path", value)
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise refuse(NOT_AN_UPLOAD)
    resolved = Path(os.path.realpath(path))
    if not resolved.is_relative_to(os.path.realpath(get_upload_folder())) or not resolved.is_file():
        raise refuse(NOT_AN_UPLOAD)
    return str(resolved)


class AnyPayload(GradioRootModel):
    """Whatever a client sent for a file input, unvalidated: Gradio's own validation would answer a wrong
    shape with a pydantic report quoting the input; the components below answer it with one line."""

    root: Any = None


def file_payload(value, model: type[FileData] | type[ImageData] = FileData) -> FileData | ImageData:
    """A client's file payload as `model`, naming an uploaded file, or the one refusal. An ImageData may
    instead carry a base64 image in its url (Gradio's webcam sends frames so): decoded in memory."""
    value = value.root if isinstance(value, GradioRootModel) else value
    if not isinstance(value, dict):
        raise refuse(NOT_AN_UPLOAD)
    try:
        payload = model(**value)
    except (TypeError, ValueError):
        raise refuse(NOT_AN_UPLOAD) from None
    if model is ImageData and payload.path is None and str(payload.url).startswith("data:image/"):
        return payload
    payload.path = uploaded_file(payload.path)
    return payload


def image_size(payload: ImageData) -> tuple[int, int]:
    """(width, height) from the image's header: the file, or the base64 data in the url; a format outside
    IMAGE_FORMATS is not an image here (UnidentifiedImageError), so Gradio never decodes one."""
    if payload.path is not None:
        with PILImage.open(payload.path, formats=IMAGE_FORMATS) as image:
            return image.size
    data = base64.b64decode(payload.url.split(",", 1)[-1], validate=False)
    with PILImage.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
        return image.size


class UploadedImage(gr.Image):
    """`gr.Image` that opens only files Gradio received as uploads, and refuses images over the pixel limit
    from their header, before the component decodes anything (a client may name any path)."""

    is_template = True  # Gradio then serves it with gr.Image's front end
    data_model = AnyPayload

    def preprocess(self, payload):
        value = payload.root if isinstance(payload, GradioRootModel) else payload
        if value is None:
            return None
        payload = file_payload(value, ImageData)
        try:
            check_pixel_count(image_size(payload), "image")
        except PILImage.DecompressionBombError:  # PIL's own limit, hit while reading the header
            raise refuse(f"image: image too large (at most {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels)") from None
        except binascii.Error:  # broken base64 (a ValueError, so caught first)
            raise refuse("Not an image file, or a format that cannot be read.") from None
        except ValueError as error:
            raise refuse(str(error)) from None
        except OSError:
            raise refuse("Not an image file, or a format that cannot be read.") from None
        try:  # Gradio decodes with its own code (its EXIF read unguarded): a malformed file is refused here too
            return super().preprocess(payload)
        except (ValueError, *DECODE_ERRORS) as error:
            logger.info("image refused by Gradio's decoder: %s: %s", type(error).__name__, error)
            raise refuse("Corrupt image, or a format that cannot be read.") from None


class UploadedFiles(gr.File):
    """`gr.File` that passes on only files Gradio received as uploads."""

    is_template = True  # served with gr.File's front end

    # No __init__ of its own: Gradio builds a component's page config from its __init__ signature, and
    # an (*args, **kwargs) one dropped label, file_count and file_types. gr.File's __init__ assigns its
    # data model; this property keeps ours (every payload is checked in preprocess).
    @property
    def data_model(self):
        return AnyPayload

    @data_model.setter
    def data_model(self, value) -> None:
        pass

    def preprocess(self, payload):
        value = payload.root if isinstance(payload, GradioRootModel) else payload
        if value is None:
            return None
        files = [file_payload(item) for item in (value if isinstance(value, list) else [value])]
        return super().preprocess(ListFiles(root=files) if self.file_count != "single" else files[0])


class CheckedSlider(gr.Slider):
    """`gr.Slider` that checks a client's value before Gradio compares it with its bounds: a non-number or
    one out of range is one short refusal (Gradio's own check fails with a TypeError and a traceback)."""

    is_template = True  # served with gr.Slider's front end

    def preprocess(self, payload):
        refusal = f"{self.label}: a number from {self.minimum} to {self.maximum}."
        return super().preprocess(number_in_range(payload, self.minimum, self.maximum, refusal))
