"""Everything the suite needs is in this repository (tests/fixtures) or made by the tests: a clone
with no ../shared beside it runs the whole suite. Tools the tests drive (ffmpeg, chromium, ss)
are required, not optional: a missing one FAILS with the Debian package to install."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(Path(__file__).parent))  # tests/synth.py, tests/helpers_model.py

TOOLS = {"ffmpeg": "ffmpeg", "ffprobe": "ffmpeg", "chromium": "chromium", "ss": "iproute2", "pdftotext": "poppler-utils"}


def tool(name: str) -> str:
    """Path of a required command-line tool; fails (never skips) naming the package to install."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"the tests need `{name}`: apt-get install {TOOLS.get(name, name)} (.ci/run installs it)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The reference tiny checkpoint's config and tokenizer with seeded random weights, saved with
    save_pretrained (safetensors): what `--model` gets in the pipeline tests."""
    from helpers_model import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("models") / "tiny-gemma4-unified", seed=0)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Only GPU tests may skip: any other skip is a failure (a skipped test proves nothing)."""
    outcome = yield
    report = outcome.get_result()
    if hasattr(report, "wasxfail"):  # xfailed or xpassed: a test expected to fail proves nothing
        report.outcome = "failed"
        report.longrepr = f"xfail is not allowed here (fix the test or the code): {report.wasxfail}"
    elif report.skipped and item.get_closest_marker("gpu") is None:
        report.outcome = "failed"
        report.longrepr = f"skipped, but only GPU tests may skip: {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A module that skips itself at import (a module-level ``pytest.importorskip``) fails too."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped:
        report.outcome = "failed"
        report.longrepr = f"{collector.nodeid}: skipped at import, but only GPU tests may skip: {report.longrepr}"
