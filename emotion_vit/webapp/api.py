"""The JSON API for `gradio_client`: /analyze, /list_adapters, /delete_adapter and /health.

Endpoints are methods of `Api` so that Gradio reads their type hints and docstrings (it documents
each parameter from them), with the service they call bound once. The Personalize steps that hold
references in the session (/add_references, /build_adapter) are the tab's own events.
"""

from __future__ import annotations

import gradio as gr

from ..images import read_image
from ..service import NO_ADAPTER, EmotionService
from .controls import INFERENCE
from .uploads import refuse, score_threshold_value, uploaded_file


class Api:
    def __init__(self, service: EmotionService):
        self.service = service

    def analyze(
        self,
        image: gr.FileData,
        detector: str | None = None,
        score_threshold: float | None = None,
        adapter: str = NO_ADAPTER,
        key: str = "",
    ) -> dict:
        """Find every face in an image and classify its emotion.

        Args:
            image: the image file (JPEG, PNG, WebP, ...; any size).
            detector: face detector, "retinaface" or "yunet" (default: the server's).
            score_threshold: minimum detector confidence for a face, 0-1 (default: the server's).
            adapter: name of a personalised adapter, or "none" for the base model.
            key: your adapter key (16+ characters): the adapters you built under it become usable.
        Returns:
            {faces: [{box, score, label, probabilities, track_id, landmarks}], model, adapter, detector, image,
            timings_ms}
        """
        path = uploaded_file(image)
        settings = self.service.settings
        detector = settings.detector if detector is None else detector
        if not isinstance(adapter, str) or not isinstance(key, str):
            raise refuse("adapter must be an adapter's name, or \"none\"; key a text.")
        threshold = score_threshold_value(settings.score_threshold if score_threshold is None else score_threshold)
        try:
            analysis = self.service.analyze(read_image(path), detector=detector, score_threshold=threshold,
                                            adapter=adapter, key=key)
            return self.service.describe(analysis, detector, adapter, key)
        except ValueError as error:
            raise refuse(str(error)) from None

    def list_adapters(self, key: str = "") -> list[str]:
        """Names of the adapters you may use: those built under your key (16+ characters), and the server's own."""
        if not isinstance(key, str):
            raise refuse("key must be a text.")
        try:
            return self.service.adapter_names(key)
        except ValueError as error:
            raise refuse(str(error)) from None

    def delete_adapter(self, name: str, key: str = "") -> str:
        """Delete one of the adapters built under your key.

        Args:
            name: the adapter's name (see /list_adapters).
            key: the adapter key it was built under (16+ characters).
        Returns:
            what was deleted
        """
        if not isinstance(name, str) or not isinstance(key, str):
            raise refuse("name and key must be texts.")
        try:
            self.service.delete_adapter(name, key)
        except ValueError as error:
            raise refuse(str(error)) from None
        return f"Deleted adapter {name}."

    def health(self) -> dict:
        """Whether the model answers: {status: "ok" | "failing", model}."""
        return self.service.health()

    def register(self) -> None:
        """Add the endpoints to the Blocks being built."""
        gr.api(self.analyze, api_name="analyze", concurrency_id=INFERENCE)
        gr.api(self.list_adapters, api_name="list_adapters")
        gr.api(self.delete_adapter, api_name="delete_adapter")
        # Outside the model's concurrency group: a busy queue must not look like a dead server.
        gr.api(self.health, api_name="health", concurrency_limit=None)
