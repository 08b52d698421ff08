"""A gate in front of Gradio: a request naming a file that was not uploaded here never reaches it.

Gradio checks a FileData's path itself, but its refusal quotes the path made absolute (so a relative
one reveals the server's working folder) and logs a traceback per request; an http(s) path it
downloads on the visitor's behalf (private addresses excepted). This
ASGI middleware reads each JSON request body first and refuses, with one message and one log line,
any file object whose path is not a file in Gradio's upload folder. Base64 webcam frames carry no
path and pass; uploads themselves (multipart) are Gradio's, bounded by `max_file_size`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from gradio.utils import get_upload_folder
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .uploads import NOT_AN_UPLOAD

logger = logging.getLogger(__name__)


def names_foreign_file(data) -> bool:
    """True when `data` (a decoded JSON body) holds, at any depth, a dict whose "path" is set and is not a
    file inside Gradio's upload folder (a server path, a relative path, an http(s) address, a directory)."""
    stack = [data]
    upload_folder = Path(os.path.realpath(get_upload_folder()))
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            path = item.get("path")
            if path is not None:
                if not isinstance(path, str) or not os.path.isabs(path):
                    return True
                resolved = Path(os.path.realpath(path))
                if not resolved.is_relative_to(upload_folder) or not resolved.is_file():
                    return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class UploadGuard:
    """Refuses JSON requests that name a file Gradio did not receive as an upload (HTTP 400), and JSON
    bodies over `max_body_bytes` (413), before Gradio parses them."""

    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        if (scope["type"] != "http" or scope["method"] != "POST"
                or not headers.get(b"content-type", b"").startswith(b"application/json")):
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                await self._refuse(scope, receive, send, "Request too large.", 413)
                return
        try:
            foreign = names_foreign_file(json.loads(body)) if body else False
        except ValueError:
            foreign = False  # not JSON after all: Gradio answers that itself
        if foreign:
            await self._refuse(scope, receive, send, NOT_AN_UPLOAD, 400)
            return
        await self.app(scope, _replay(body, receive), send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, detail: str, status: int) -> None:
        logger.info("refused: %s", detail)
        await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the already-read body over once, then the client's own messages (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay
