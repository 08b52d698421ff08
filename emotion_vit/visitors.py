"""The visitors' adapters on disk, counted: keys cost nothing, so the server bounds what all keys together
hold, and what one network holds, and finds the adapter used least recently when it must make room.

Layout: ``<adapters_dir>/_visitors/<hash of a key>/<adapter name>/`` with the adapter's files, its metadata
file's time marking its last use (to the hour), and ``.client``: a keyed hash of the network it was built
from (the key, ``_visitors/.client-secret``, is made once per adapters folder; the address is not stored).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from pathlib import Path

from .adapt import METADATA_FILE

logger = logging.getLogger(__name__)
VISITORS_DIR = "_visitors"  # cannot clash with an adapter name (names start with a letter or digit)
CLIENT_FILE = ".client"
CLIENT_SECRET_FILE = ".client-secret"
CLIENT_SECRET_BYTES = 32
MARK_USED_EVERY_S = 3600


def visitor_adapters(adapters_dir: str | Path) -> list[Path]:
    """The metadata files of the adapters visitors have saved, under all keys."""
    return list((Path(adapters_dir) / VISITORS_DIR).glob(f"*/*/{METADATA_FILE}"))


def adapters_used(adapters_dir: str | Path, tag: str | None = None) -> list[tuple[float, Path]]:
    """(time of last use, folder) of each visitors' adapter, of those built from the network of `tag` if given:
    one listing for both a count and the choice of the adapter that makes room."""
    used = []
    for path in visitor_adapters(adapters_dir):
        try:
            if tag is None or (path.parent / CLIENT_FILE).read_text() == tag:
                used.append((path.stat().st_mtime, path.parent))
        except OSError:  # deleted meanwhile, or untagged (built by a direct call)
            continue
    return used


def mark_used(folder: Path, every_s: float = MARK_USED_EVERY_S) -> None:
    """Note that the adapter in `folder` was used (its metadata file's time, at most once an hour)."""
    path = folder / METADATA_FILE
    try:
        if time.time() - path.stat().st_mtime > every_s:
            os.utime(path)
    except OSError:  # deleted meanwhile: nothing to mark
        pass


def client_tag(adapters_dir: str | Path, network: str) -> str:
    """A keyed hash of a client's network: its adapters can be counted, and the address is not stored (a
    plain hash of an IPv4 address is undone by trying all 4 billion)."""
    root = Path(adapters_dir) / VISITORS_DIR
    root.mkdir(parents=True, exist_ok=True)
    path = root / CLIENT_SECRET_FILE
    try:
        secret = path.read_bytes()
    except FileNotFoundError:
        secret = b""
    if len(secret) < CLIENT_SECRET_BYTES:  # none yet (or cut short): made whole, then moved into place
        if secret:
            logger.warning("the visitors' network key was cut short: a new one is made (older tags no longer count)")
        secret = os.urandom(CLIENT_SECRET_BYTES)
        draft = root / f"{CLIENT_SECRET_FILE}.{os.getpid()}"
        with os.fdopen(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as file:
            file.write(secret)
        os.replace(draft, path)
    return hmac.new(secret, network.encode(), hashlib.sha256).hexdigest()[:32]


def tag_adapter(folder: Path, tag: str) -> None:
    """Note the network `folder`'s adapter is built from, before its files are written (an adapter is never
    left uncounted); a rebuild keeps the first tag, so rebuilding under another network moves nothing."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / CLIENT_FILE).exists():
        (folder / CLIENT_FILE).write_text(tag)
