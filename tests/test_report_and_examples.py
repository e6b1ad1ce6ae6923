"""The HTML report in a real browser, and the examples (run here so that they cannot rot)."""

import json
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


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    """The bundled clips and a generated two-speaker clip of the domain through `onepass run --ask`
    (the bundled model), then `onepass report`."""
    import json
    import shutil

    from onepass.model.training import domain

    src = tmp_path_factory.mktemp("report_in")
    for clip in (ROOT / "examples" / "clips").glob("*.mp4"):
        shutil.copy(clip, src / clip.name)
    rng = np.random.default_rng(5)
    while True:
        timeline = domain.random_timeline(rng, 20, noise=False)
        if len({u.speaker for u in timeline.utterances}) >= 2:
            break
    domain.write_clip(src / "two_speakers.mp4", timeline, rng)
    (src / "two_speakers.json").unlink()
    # the bundled weights with the documented question set the recipe exports (grammar.QUESTIONS)
    from onepass.model.training.grammar import QUESTIONS

    model = tmp_path_factory.mktemp("model") / "default"
    shutil.copytree(ROOT / "model" / "default", model)
    meta = json.loads((model / "onepass.json").read_text())
    meta.setdefault("questions", {k: {"text": t, "unit": u} for k, (t, u) in QUESTIONS.items()})
    (model / "onepass.json").write_text(json.dumps(meta))
    out = tmp_path_factory.mktemp("report_out")
    res = subprocess.run(["onepass", "run", str(src), "-o", str(out), "--model", str(model), "--ask", "is anything damaged",
                          "--ask", "Which shapes are visible?"], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert 'answers only its documented questions' in res.stderr and '"is anything damaged" is answered as unsupported' in res.stderr
    assert "Which shapes are visible" not in res.stderr  # a documented question, asked in other words
    res = subprocess.run(["onepass", "report", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return out, out / "report", json


def test_questions_outside_the_documented_set_are_marked_and_every_row_has_a_confidence(report_run):
    import duckdb

    from onepass.model.tasks import UNSUPPORTED

    out, report, _ = report_run
    con = duckdb.connect()
    rows = con.execute(f"SELECT question, text, supported, confidence, start_ms, end_ms FROM read_parquet('{out}/sources/*/answers.parquet')").fetchall()
    odd = [r for r in rows if r[0] == "is anything damaged"]
    shapes = [r for r in rows if r[0] == "which shapes are visible"]
    assert odd and all(r[1] == UNSUPPORTED and r[2] is False and r[3] is None for r in odd)
    assert len(shapes) >= 19 * 3 and all(r[2] is True and r[3] is not None and r[3] <= 0 for r in shapes)  # one per kept frame
    frames = set(con.execute(f"SELECT source_id || frame_ms FROM read_parquet('{out}/sources/*/captions.parquet')").fetchall())
    starts = con.execute(f"SELECT source_id || start_ms FROM read_parquet('{out}/sources/*/answers.parquet') "
                         "WHERE question = 'which shapes are visible'").fetchall()
    assert set(starts) <= frames and len(starts) == len(set(starts))  # one answer per kept frame, from it on
    for table in ("captions", "transcripts"):
        conf = [c for (c,) in con.execute(f"SELECT confidence FROM read_parquet('{out}/sources/*/{table}.parquet')").fetchall()]
        assert conf and all(c is not None and -50 < c <= 0 for c in conf), table
    csv_rows = (report / "answers.csv").read_text().splitlines()
    assert csv_rows[0].endswith("flagged,confidence,low_confidence")
    assert not any(UNSUPPORTED in line and ",True," in line for line in csv_rows)  # never flagged


def _browser():
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=tool("chromium"), args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
    return pw, browser


def _open(browser, url: str, errors: list):
    page = browser.new_page(viewport={"width": 1200, "height": 1000})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    return page


def _not_blank(page, path: Path) -> None:
    from PIL import Image

    page.screenshot(path=str(path), full_page=True)
    img = np.asarray(Image.open(path).convert("RGB")).astype(float)
    assert img.std() > 10 and len(np.unique(img.reshape(-1, 3), axis=0)) > 50, path


def test_report_pages_work_in_a_real_browser(report_run, tmp_path):
    import duckdb

    out, report, _ = report_run
    con = duckdb.connect()
    sources = {r[0]: r[1] for r in con.execute(f"SELECT source_id, path FROM read_parquet('{out}/sources/*/source.parquet')").fetchall()}
    two = next(sid for sid, path in sources.items() if path.endswith("two_speakers.mp4"))
    lines = con.execute(f"SELECT start_ms, end_ms, text FROM read_parquet('{out}/sources/*/transcripts.parquet') "
                        "WHERE source_id = ? ORDER BY start_ms", [two]).fetchall()
    assert lines, "the bundled model wrote no transcript for the generated clip"
    pw, browser = _browser()
    errors: list = []
    try:
        page = _open(browser, (report / f"{two}.html").as_uri(), errors)
        data = page.evaluate("() => JSON.parse(document.getElementById('data').textContent)")
        frames = data["frames"]
        assert len(frames) >= 19 and all(f["img"] for f in frames)  # every kept frame of the 20 s clip
        # 1. the scrubber reaches every kept frame and shows it with its caption
        for f in frames:
            page.locator("#scrubber").fill(str(f["ms"]))
            assert page.eval_on_selector("#frame", "e => +e.dataset.ms") == f["ms"]
            assert page.eval_on_selector("#frame", "e => e.getAttribute('src')") == f["img"]
            assert page.text_content("#caption") == f["caption"]
        # ...and highlights the transcript line and the speaker turn under it
        a, b, _ = lines[-1]
        page.locator("#scrubber").fill(str((a + b) // 2))
        current = page.locator("#transcript .line.current")
        assert current.count() >= 1 and int(current.first.get_attribute("data-start")) == a
        # 2. a transcript line plays its span of audio
        line = page.locator("#transcript .line").nth(0)
        start = int(line.get_attribute("data-start"))
        line.click()
        t = page.eval_on_selector("#audio", "a => a.currentTime")
        assert start / 1000 <= t < start / 1000 + 0.5 and int(page.input_value("#scrubber")) == start
        page.wait_for_function("() => { const a = document.getElementById('audio'); return a.error !== null || a.duration > 19 }", timeout=30000)
        assert page.eval_on_selector("#audio", "a => a.error === null && a.duration > 19")
        # 4. answers listed with the filter for flagged windows
        n_answers = page.locator(".answer").count()
        assert n_answers >= 1
        page.locator("#only-flagged").check()
        shown = page.locator(".answer:visible").count()
        assert shown == page.locator(".answer.flagged").count() <= n_answers
        _not_blank(page, tmp_path / "source.png")
        # 3. the index: figures per source, and a search that opens the page at the moment
        index = _open(browser, (report / "index.html").as_uri(), errors)
        assert index.locator("#sources tr[data-source]").count() == len(sources) == 3
        word = max(lines[-1][2].split(), key=len)
        index.locator("#search").fill(word)
        hits = index.locator("#results .hit a")
        targets = [hits.nth(i).get_attribute("href") for i in range(hits.count())]
        want = f"{two}.html#t="
        moments = [int(h.split("#t=")[1]) for h in targets if h.startswith(want)]
        said = [s for s, _, text in lines if word in text.split()]
        assert set(said) <= set(moments), (word, targets)
        link = hits.nth(next(i for i, h in enumerate(targets) if h == f"{want}{said[-1]}"))
        link.click()
        index.wait_for_load_state()
        assert index.url.endswith(f"{two}.html#t={said[-1]}")
        assert int(index.input_value("#scrubber")) == said[-1]
        assert index.locator("#transcript .line.current").count() >= 1
        _not_blank(index, tmp_path / "after_search.png")
        home = _open(browser, (report / "index.html").as_uri(), errors)
        _not_blank(home, tmp_path / "index.png")
        assert errors == [], errors
    finally:
        browser.close()
        pw.stop()
    answers = (report / "answers.csv").read_text().splitlines()
    assert answers[0].startswith("source_id,path,start_ms,end_ms,question,answer,flagged") and len(answers) - 1 >= 3


@pytest.mark.parametrize("script", ["field_inspection.py", "live_stream.py"])
def test_examples_run(script, tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "examples" / script), str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    import re

    counts = [int(n) for n in re.findall(r"\((\d+) rows?\)", res.stdout)]
    assert counts and max(counts) >= 1, res.stdout[-2000:]  # the query printed rows, not "(0 rows)"
    if script == "live_stream.py":  # live, the bundled model's per-frame captions: one row per kept frame, as a file run writes
        import duckdb

        frames = duckdb.connect().execute(
            f"SELECT count(*), count(DISTINCT frame_ms) FROM read_parquet('{tmp_path / 'out'}/sources/*/captions.parquet')").fetchone()
        seconds = float(json.loads((ROOT / "examples" / "clips" / "inspection_2.json").read_text())["duration_ms"]) / 1000
        assert frames[0] == frames[1] >= int(seconds) - 1, (frames, seconds, res.stdout[-2000:])
