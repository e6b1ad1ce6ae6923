"""The HTML report in a real browser, and the examples (run here so that they cannot rot)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tool

ROOT = Path(__file__).resolve().parents[1]


def chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    base = [tool("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp / 'profile'}"]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("examples") / "batch"
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "batch_and_query.py"), str(out)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return out, res.stdout


def test_batch_example_prints_its_tables(example_run):
    _, stdout = example_run
    assert "inspection_1" in stdout and "inspection_2" in stdout and "speaker" in stdout


def test_report_renders_in_headless_chromium(example_run, tmp_path):
    from onepass.pipeline.report import write_reports

    out, _ = example_run
    pages = write_reports(out, tmp_path / "report")
    index, page = pages[0], pages[1]
    html = page.read_text()
    assert "data:image/jpeg;base64," in html and "http" not in html.replace("http://www.w3.org", "")  # offline
    shot = tmp_path / "shot.png"
    res = chromium([f"--screenshot={shot}", "--window-size=1200,1400", page.as_uri()], tmp_path)
    assert shot.exists(), res.stderr
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    assert img.std() > 10  # not blank
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # thumbnails and coloured speaker bars
    dom = chromium(["--dump-dom", page.as_uri()], tmp_path).stdout
    for needle in ("id=\"frames\"", "id=\"transcript\"", "id=\"timeline\"", "id=\"metadata\"", "class=\"turn\"", "S1", "showFrame("):
        assert needle in dom, needle
    index_dom = chromium(["--dump-dom", index.as_uri()], tmp_path).stdout
    assert "inspection_1.mp4" in index_dom and "ok" in index_dom


@pytest.mark.parametrize("script", ["field_inspection.py", "live_stream.py"])
def test_examples_run(script, tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "examples" / script), str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "rows)" in res.stdout or "row)" in res.stdout
