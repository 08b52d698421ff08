"""Where the benchmarks find the project and the shared material (../shared, beside the checkout)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FER2013 = SHARED / "data" / "fer2013.zip"
