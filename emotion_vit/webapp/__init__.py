"""The Gradio app: live webcam view of a class, photo analysis, personal adapters, and a JSON API.

`EmotionService` (emotion_vit.service) loads the model and detectors once and analyses images for
every session; `build_app` lays out the page, one module per tab (live, photo, personalize) with
module-level callbacks, and the API (api.py). Frames are analysed in memory: nothing here writes
them to disk, and Gradio's own cache of served images is purged (`delete_cache`) so hours of
streaming cannot fill the disk.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from functools import partial

import gradio as gr
from fastapi.responses import JSONResponse
from starlette.middleware import Middleware

from ..service import EmotionService, public_name
from .api import Api
from .controls import INFERENCE, settings_controls
from .guard import UploadGuard
from .live import live_tab
from .personalize import personalize_tab, restore_key
from .photo import photo_tab

__all__ = ["INFERENCE", "MAX_FILE_MB", "QUEUE_SIZE", "build_app", "launch", "limit_malloc_arenas"]
logger = logging.getLogger(__name__)
MAX_FILE_MB = 20  # uploads above this are refused by Gradio before they are stored
QUEUE_SIZE = 64  # requests waiting beyond this are refused ("queue full") instead of piling up
# glibc gives each of Gradio's worker threads a heap of its own, and memory crept up under steady traffic
# (+100 MB in 10 minutes of bench/load.py's soak); with two heaps it stayed within ~40 MB at the same speed.
MALLOC_ARENAS = 2
# Gradio's webcam button says "Record", which suggests video is saved; nothing is.
BUTTON_TEXTS = gr.I18n(en={"audio.record": "Start", "audio.stop": "Stop"})


def build_app(service: EmotionService) -> gr.Blocks:
    # Purge Gradio's cache of served frames every minute, keeping files at most two minutes.
    with gr.Blocks(title="emotion_vit: live face emotions", delete_cache=(60, 120)) as app:
        gr.Markdown(
            "# emotion_vit\nEvery face in the frame, with its emotion. "
            f"Model: `{public_name(service.model.name)}` ({', '.join(service.model.labels)}). "
            "Frames are analysed in memory and never stored.")
        stored_key = gr.BrowserState("", storage_key="emotion_vit_adapter_key")
        controls = settings_controls(service)
        with gr.Tab("Live"):
            live_tab(service, controls)
        with gr.Tab("Photo"):
            photo_tab(service, controls)
        with gr.Tab("Personalize"):
            existing = personalize_tab(service, controls, stored_key)
        Api(service).register()
        # The browser's key comes back, and with it the visitor's adapters, when a page (re)loads.
        app.load(partial(restore_key, service), [stored_key], [stored_key, controls.key, controls.adapter, existing],
                 api_visibility="private")
    return app


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc heaps (arenas); call it before the model loads, as heaps made until then stay
    (torch's and onnxruntime's threads make four more). An operator's MALLOC_ARENA_MAX wins. False where
    there is nothing to set (another C library, or set already)."""
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-8, arenas))  # -8: M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc (musl has no arenas to cap)
        return False


def launch(app: gr.Blocks, host: str, port: int, share: bool = False, max_file_mb: int = MAX_FILE_MB,
           queue_size: int = QUEUE_SIZE, prevent_thread_lock: bool = False, quiet: bool = False, **kwargs):
    """Serve `app`: one model call at a time, a bounded queue, bounded uploads. Prints where it listens
    (Gradio's own start text would advise `share=True` in code; here that is `--share`)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up checks, one line per request
    result = app.queue(default_concurrency_limit=1, max_size=queue_size).launch(
        server_name=host, server_port=port, share=share, show_error=False, max_file_size=f"{max_file_mb}mb",
        i18n=BUTTON_TEXTS, app_kwargs={"exception_handlers": {KeyError: unknown_endpoint}, "middleware": [
            Middleware(UploadGuard, max_body_bytes=int(max_file_mb * 2**20 * 1.4), blocks=app)]},  # base64 adds a third
        prevent_thread_lock=True, quiet=True, **kwargs)
    if not quiet:
        public = f"* Public link: {app.share_url}" if app.share_url else "* For a temporary public link: --share"
        print(f"* Running on {app.local_url}\n{public}", flush=True)
    if not prevent_thread_lock:
        app.block_thread()
    return result


async def unknown_endpoint(request, error: KeyError) -> JSONResponse:
    """Gradio looks event handlers up by the client's fn_index: an unknown one raises KeyError (an HTTP 500).
    On the queue's join route that is the client's mistake (404); anywhere else a server fault, said without details."""
    if request.url.path.endswith("/queue/join"):
        logger.info("refused: unknown endpoint")
        return JSONResponse({"detail": "Unknown endpoint."}, status_code=404)
    logger.error("internal error on %s", request.url.path, exc_info=error)
    return JSONResponse({"detail": "Internal error."}, status_code=500)
