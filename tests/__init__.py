"""The test suite, as packages mirroring the source tree."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
"""The repository root."""
