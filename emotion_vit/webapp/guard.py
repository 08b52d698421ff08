"""A gate in front of Gradio: a request naming a file that was not uploaded here never reaches it.

Gradio checks a FileData's path itself, but its refusal quotes the path made absolute (so a relative
one reveals the server's working folder) and logs a traceback per request; an http(s) path it
downloads on the visitor's behalf (private addresses excepted). This
ASGI middleware reads each request body first (all but multipart uploads to Gradio's upload
routes, bounded by its `max_file_size`), caps its size, and refuses, with one message and one log line, any
JSON file object whose path is not a file in Gradio's upload folder. Base64 webcam frames carry no
path and pass. An upload that Gradio's own parser fails on gets a 400, not its HTTP 500.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from anyio import CapacityLimiter, to_thread
from gradio.utils import get_upload_folder
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .uploads import NOT_AN_UPLOAD

logger = logging.getLogger(__name__)
UPLOAD_ROUTES = ("/upload", "/component_server")  # Gradio's multipart routes
# A body's JSON beside its base64 images (webcam frames): this app's inputs are a few settings and file
# objects (100 references: about 35 KB). A larger structure is refused before it is parsed, here or by
# FastAPI, which parses a passed body again on the event loop (39 MB of small numbers: 0.84 s).
MAX_STRUCTURE_BYTES = 2**20
DATA_URL = re.compile(rb'"data:[^"\\]*"')  # a base64 data URL, quotes included
EVENT_ROUTE = re.compile(r"/(?:call|run|api)/([^/]+)/?$")  # POST .../call/<api_name> and the like


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


def called_event(blocks, path: str, body):
    """The event function a request calls (by the queue's fn_index, or by name on the call/run/api routes),
    None when the request calls none, False when it names an event that does not exist."""
    if path.endswith("/queue/join"):
        fn_index = body.get("fn_index") if isinstance(body, dict) else None
        return blocks.fns.get(fn_index, False) if isinstance(fn_index, int) else False
    named = EVENT_ROUTE.search(path)
    if named is None:
        return None
    return next((fn for fn in blocks.fns.values() if fn.api_name == named.group(1)), False)


class UploadGuard:
    """Refuses requests whose JSON names a file Gradio did not receive as an upload (HTTP 400), bodies
    over `max_body_bytes` or with more than MAX_STRUCTURE_BYTES beside their data URLs (413), whatever
    their content type, and calls of an unknown event (404) or
    with too few inputs (400; Gradio's answer quotes its components' reprs), before Gradio parses them."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, blocks=None):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.blocks = blocks
        self.parsers = CapacityLimiter(2)  # bodies checked at once: a flood of large ones does not take every thread

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        content_types = [value for name, value in scope.get("headers") or [] if name.lower() == b"content-type"]
        if len(content_types) > 1:  # the gate and FastAPI might each read a different one
            await self._refuse(scope, receive, send, "One Content-Type header, please.", 400)
            return
        # Every POST body but an upload to Gradio's upload routes (bounded by its max_file_size): FastAPI
        # reads JSON under any spelling of its media type (Application/JSON, application/x+json, none).
        if (scope["path"].rstrip("/").endswith(UPLOAD_ROUTES)
                and content_types and content_types[0].strip().lower().startswith(b"multipart/")):
            await self._upload(scope, receive, send)
            return
        chunks, size, more = [], 0, True  # joined once: `body += chunk` copied the whole body at every chunk
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                await self._refuse(scope, receive, send, "Request too large.", 413)
                return
        body = b"".join(chunks)
        # Parsing and checking a large body takes a while: off the event loop, which every visitor's stream shares.
        refusal = await to_thread.run_sync(self._refusal_of_body, scope["path"], body, limiter=self.parsers)
        if refusal:
            await self._refuse(scope, receive, send, *refusal)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass an upload to Gradio; a form it fails on before answering (a file part without a file name
        raises its TypeError: HTTP 500 and a traceback) is refused instead."""
        answered = False

        async def watched_send(message: Message) -> None:
            nonlocal answered
            answered = answered or message["type"] == "http.response.start"
            await send(message)
        try:
            await self.app(scope, receive, watched_send)
        except Exception as error:
            if answered:
                raise
            logger.debug("upload failed in Gradio", exc_info=True)
            logger.info("refused: malformed upload (%s)", type(error).__name__)
            await JSONResponse({"detail": "Malformed upload: send each file with its file name."},
                               status_code=400)(scope, receive, send)

    def _refusal_of_body(self, path: str, body: bytes) -> tuple[str, int] | None:
        if len(body) - sum(len(url) for url in DATA_URL.findall(body)) > MAX_STRUCTURE_BYTES:
            return "Request too large.", 413
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None  # not JSON after all: Gradio answers that itself
        except RecursionError:  # nested deeper than the parser goes: Gradio's own parse would fail the same way
            return "Malformed request.", 400
        return self._refusal(path, data)

    def _refusal(self, path: str, data) -> tuple[str, int] | None:
        if names_foreign_file(data):
            return NOT_AN_UPLOAD, 400
        event = called_event(self.blocks, path, data) if self.blocks is not None else None
        if event is False:
            return "Unknown endpoint.", 404
        inputs = data.get("data") if isinstance(data, dict) else None
        if event is not None and isinstance(inputs, list) and len(inputs) < len(event.inputs):
            return f"Expected {len(event.inputs)} input values, got {len(inputs)}.", 400
        return None

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
