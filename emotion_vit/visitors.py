"""The visitors' adapters on disk, counted: keys cost nothing, so the server bounds what all keys together
hold, and what one network holds, and finds the adapter used least recently when it must make room.

Layout: ``<adapters_dir>/_visitors/<hash of a key>/<adapter name>/`` with the adapter's files, its metadata
file's time marking its last use (to the hour), and ``.client``: a keyed hash of the network it was built
from (the key, ``_visitors/.client-secret``, is made once per adapters folder; the address is not stored).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from pathlib import Path

from .adapt import METADATA_FILE

VISITORS_DIR = "_visitors"  # cannot clash with an adapter name (names start with a letter or digit)
CLIENT_FILE = ".client"
CLIENT_SECRET_FILE = ".client-secret"
CLIENT_SECRET_BYTES = 32
MARK_USED_EVERY_S = 3600


def visitor_adapters(adapters_dir: str | Path) -> list[Path]:
    """The metadata files of the adapters visitors have saved, under all keys."""
    return list((Path(adapters_dir) / VISITORS_DIR).glob(f"*/*/{METADATA_FILE}"))


def least_recently_used(adapters_dir: str | Path) -> tuple[Path | None, float]:
    """The visitors' adapter folder used least recently, and for how many seconds it has been idle."""
    used = []
    for path in visitor_adapters(adapters_dir):
        try:
            used.append((path.stat().st_mtime, path.parent))
        except OSError:  # deleted meanwhile
            continue
    last_used, folder = min(used, default=(time.time(), None))
    return folder, time.time() - last_used


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
    try:  # made once, by whichever replica comes first
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as file:
            file.write(os.urandom(CLIENT_SECRET_BYTES))
    except FileExistsError:
        for _ in range(100):  # another replica may be writing it this moment
            if len(path.read_bytes()) >= CLIENT_SECRET_BYTES:
                break
            time.sleep(0.01)
    return hmac.new(path.read_bytes(), network.encode(), hashlib.sha256).hexdigest()[:32]


def tag_adapter(folder: Path, tag: str) -> None:
    (folder / CLIENT_FILE).write_text(tag)


def adapters_of_client(adapters_dir: str | Path, tag: str) -> int:
    """How many visitors' adapters were built from the network of `tag`."""
    count = 0
    for path in visitor_adapters(adapters_dir):
        try:
            count += (path.parent / CLIENT_FILE).read_text() == tag
        except OSError:  # built by a direct call, or deleted meanwhile
            continue
    return count
