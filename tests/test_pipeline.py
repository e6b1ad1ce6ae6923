"""End to end under local Ray: run, query, export, resume, bad input."""

import re
from fractions import Fraction
from pathlib import Path

import duckdb
import numpy as np
import pytest
from click.testing import CliRunner

from onepass.pipeline.cli import main
from synth import espeak, write_clip


@pytest.fixture(scope="module")
def run_once(tmp_path_factory, tiny_model):
    src = tmp_path_factory.mktemp("in")
    speech = np.concatenate([np.zeros(8000, np.float32), espeak("valve number seven shows corrosion", "en-us+m3", 35, 160),
                             np.zeros(16000, np.float32), espeak("tighten the loose flange", "en-gb+f4", 75, 170)])
    speech = np.concatenate([speech, np.zeros(16000 * 12 - speech.size, np.float32)])
    write_clip(src / "good clip.mp4", [40 * i for i in range(300)], Fraction(1, 1000), audio=speech)
    (src / "sub").mkdir()
    (src / "sub" / "broken.mp4").write_bytes(b"this is not a video")
    out = tmp_path_factory.mktemp("out")
    model = str(tiny_model)
    args = ["run", str(src), "-o", str(out), "--model", model, "--window-s", "5", "--ask", "what is visible"]
    first = CliRunner().invoke(main, args)
    second = CliRunner().invoke(main, args)
    yield out, first, second, args
    import ray

    ray.shutdown()


def test_exit_code_and_error_row(run_once):
    out, first, _, _ = run_once
    assert first.exit_code == 1, first.output
    con = duckdb.connect()
    rows = con.execute(f"SELECT path, status, error, windows, decode_node FROM read_parquet('{out}/sources/*/source.parquet') ORDER BY path").fetchall()
    assert [r[1] for r in rows] == ["ok", "error"]
    assert rows[0][3] == 3 and "broken.mp4" in rows[1][0] and rows[1][2]
    # where each file was decoded: the Ray node id (56 hex digits) of the task that opened it
    assert re.fullmatch(r"[0-9a-f]{56}", rows[0][4]) and re.fullmatch(r"[0-9a-f]{56}", rows[1][4]), rows


def _in_process(run_once, tiny_model):
    """The same clip windowed, patchified and analysed in this process (no Ray): what the tables must hold."""
    from onepass.model.analyse import analyse
    from onepass.model.load import load_backbone
    from onepass.model.runner import Runner
    from onepass.model.tasks import TaskSet
    from onepass.operators.decode import MediaReader
    from onepass.pipeline.windows import iter_windows

    src = next(Path(run_once[3][1]).glob("*.mp4"))
    with MediaReader(src) as media:
        windows = list(iter_windows(media, "x", window_s=5))
    return analyse(Runner(load_backbone(tiny_model, device="cpu")), windows, TaskSet(questions=("what is visible",)))


def test_tables_read_with_one_glob_each(run_once, tiny_model):
    out, *_ = run_once
    con = duckdb.connect()
    captions = con.execute(f"SELECT frame_ms, text FROM read_parquet('{out}/sources/*/captions.parquet') ORDER BY 1").fetchall()
    want = [(c.frame_ms, c.text) for r in _in_process(run_once, tiny_model) for c in r.captions]
    assert captions == want and {f for f, _ in captions} <= set(range(0, 12000, 1000))
    answers = con.execute(f"SELECT count(*), min(question) FROM read_parquet('{out}/sources/*/answers.parquet')").fetchone()
    assert answers[1] == "what is visible"
    turns = con.execute(f"SELECT start_ms, end_ms, speaker FROM read_parquet('{out}/sources/*/speakers.parquet') ORDER BY 1").fetchall()
    assert len(turns) >= 2 and turns[0][0] < 1000 and turns[0][2] == "S1"


def test_query_command(run_once):
    out, *_ = run_once
    n = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{out}/sources/*/transcripts.parquet')").fetchone()[0]
    res = CliRunner().invoke(main, ["query", str(out), "SELECT count(*) AS n FROM transcripts"])
    assert res.exit_code == 0 and re.search(rf"^{n}$", res.output, re.M) and "(1 row)" in res.output, res.output
    res = CliRunner().invoke(main, ["query", str(out), "SELEC nonsense"])
    assert res.exit_code == 2


def test_exports_parse_back(run_once):
    out, *_ = run_once
    for fmt in ("srt", "vtt", "rttm"):
        res = CliRunner().invoke(main, ["export", str(out), "--format", fmt])
        assert res.exit_code == 0, res.output
    vtt = next((out / "export").glob("*.vtt")).read_text()
    assert vtt.startswith("WEBVTT")
    cues = re.findall(r"(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})", vtt)
    assert cues and all(tuple(map(int, c[:4])) <= tuple(map(int, c[4:])) for c in cues)
    srt = next((out / "export").glob("*.srt")).read_text()
    assert re.search(r"^1\n00:00:0\d,\d{3} --> ", srt, re.M)
    rttm = next((out / "export").glob("*.rttm")).read_text().splitlines()
    fields = rttm[0].split()
    assert fields[0] == "SPEAKER" and float(fields[3]) >= 0 and float(fields[4]) > 0 and fields[7].startswith("S")


def test_rerun_skips_committed_sources_and_retries_failed(run_once):
    _, _, second, _ = run_once
    assert "skipped" in second.output and second.exit_code == 1  # the broken file is retried and fails again


def test_usage_errors_exit_2(tmp_path):
    res = CliRunner().invoke(main, ["run", "x.mp4", "-o", str(tmp_path), "--window-s", "60"])
    assert res.exit_code == 2 and "30" in res.output
    res = CliRunner().invoke(main, ["run", "x.mp4", "-o", str(tmp_path), "--tasks", "dance"])
    assert res.exit_code == 2
    res = CliRunner().invoke(main, ["run", "--help"])
    assert "Examples" in res.output


def test_query_is_read_only(run_once, tmp_path):
    out, *_ = run_once
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    for sql in [f"COPY (SELECT 1) TO '{out}/sources/evil.parquet'", "CREATE TABLE t AS SELECT 1",
                f"ATTACH '{tmp_path}/x.duckdb'", "SELECT 1; SELECT 2"]:
        res = CliRunner().invoke(main, ["query", str(out), sql])
        assert res.exit_code == 2 and "one SELECT" in res.output, (sql, res.output)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_query_reads_nothing_outside_its_output_folder(run_once, tmp_path):
    import duckdb

    from onepass.pipeline.writers import connect

    out, *_ = run_once
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2\n")
    for sql in [f"SELECT * FROM read_text('{secret}')", f"SELECT * FROM read_csv('{secret}')", "SELECT * FROM read_text('/etc/hostname')",
                f"SELECT * FROM read_parquet('{out}/../**/*.parquet')"]:
        res = CliRunner().invoke(main, ["query", str(out), sql])
        # refused for the reason that matters (not any exit 2: a typo would pass that)
        assert res.exit_code == 2 and "Permission Error" in res.output and "hunter2" not in res.output, (sql, res.output)
    res = CliRunner().invoke(main, ["query", str(out), "SET enable_external_access = true"])
    assert res.exit_code == 2 and "one SELECT" in res.output, res.output
    # the connection's settings are locked: nothing run on it can lift them
    con = connect(out)
    for sql in ["SET enable_external_access = true", f"SET allowed_directories = ['{tmp_path}']", "SET lock_configuration = false",
                "RESET lock_configuration", "RESET enable_external_access"]:
        with pytest.raises(duckdb.Error, match="locked"):
            con.execute(sql)
    with pytest.raises(duckdb.PermissionException):
        con.execute(f"SELECT * FROM read_text('{secret}')").fetchall()
    assert con.execute("SELECT count(*) FROM sources").fetchone()[0] >= 1
    # what is inside still reads, and -o files are written by onepass, not through SQL
    res = CliRunner().invoke(main, ["query", str(out), "SELECT count(*) AS n FROM sources", "-o", str(tmp_path / "n.csv")])
    assert res.exit_code == 0 and (tmp_path / "n.csv").read_text().splitlines()[0] == '"n"'


def test_source_ids_cannot_escape_the_output_folder():
    from onepass.pipeline.sources import _safe_id
    from onepass.pipeline.writers import commit_source

    for name in ["../../etc/passwd.mp4", "/abs/path/clip.mp4", "ünïcødé clip 名前.mp4", "..", "a/../../b.mp4", "tcp://127.0.0.1:9/../../x"]:
        sid = _safe_id(name)
        assert "/" not in sid and not sid.startswith(".") and re.fullmatch(r"[A-Za-z0-9_-]+", sid), sid
    with pytest.raises(ValueError):
        commit_source(__import__("pathlib").Path("/tmp"), "../x", {})
    assert _safe_id("a/clip.mp4") != _safe_id("b/clip.mp4")  # duplicate names in different folders
