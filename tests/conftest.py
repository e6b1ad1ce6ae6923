from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures"
MEDIA = SHARED / "media"
sys.path.insert(0, str(Path(__file__).parent))  # tests/synth.py


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not present (../shared lies beside the checkout in CI)")
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return need(FIXTURES)


@pytest.fixture(scope="session")
def media_dir() -> Path:
    return need(MEDIA)
