"""Where the benchmarks find the project and the shared material (../shared, beside the checkout)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FER2013 = SHARED / "data" / "fer2013.zip"


def add_data_arguments(parser, split: str = "validation") -> None:
    """--data (FER2013 from ../shared by default) and --split (PublicTest, the data set's validation split)."""
    parser.add_argument("--data", default=str(FER2013), help="Any data source train.py reads.")
    parser.add_argument("--split", default=split)
