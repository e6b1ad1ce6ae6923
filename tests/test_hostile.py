"""Hostile inputs through the whole pipeline: each ends with its output or exactly one error row
naming the reason; the run goes on; exit code 1."""

import duckdb
from click.testing import CliRunner

from hostile import build
from onepass.pipeline.cli import main


def test_hostile_corpus(tmp_path, fixtures_dir, tiny_model):
    cases = build(tmp_path / "in", fixtures_dir)
    assert len(cases) >= 30
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", *[p for p, _ in cases], "-o", str(out), "--model",
                                    str(tiny_model), "--tasks", "", "--workers", "2"])
    assert res.exit_code == 1, res.output
    con = duckdb.connect()
    rows = {r[0]: r[1:] for r in con.execute(
        f"SELECT path, status, error, windows FROM read_parquet('{out}/sources/*/source.parquet')").fetchall()}
    missing = [p for p, _ in cases if p not in rows]
    assert not missing and len(rows) == len(cases), (missing, res.output[-3000:])  # one row per input
    for path, expected in cases:
        status, error, windows = rows[path]
        if status in ("error", "partial"):
            assert error and len(error) > 5, path  # names the reason
        if expected in ("ok", "partial"):
            assert windows >= 1, path  # it really produced windows (an empty WAV may be ok with none)
        if status == "partial":
            assert "cut short" in error or "demux" in error or "not read" in error, (path, error)
        if expected == "refused":
            assert status == "partial" and windows == 0 and "is not plausible: its audio was not read" in error, (path, status, error)
        else:
            assert expected == "either" or status == expected, (path, status, error)
    assert "PARTIAL" in res.output and "FAILED" in res.output
    by_status = dict(con.execute(f"SELECT status, count(*) FROM read_parquet('{out}/sources/*/source.parquet') GROUP BY 1").fetchall())
    print(f"hostile corpus: {len(cases)} cases, {by_status}")


def test_a_source_over_its_time_limit_gets_an_error_row_and_the_run_goes_on(tmp_path, tiny_model):
    from fractions import Fraction

    from synth import tone, write_clip

    long = write_clip(tmp_path / "long.mp4", [40 * i for i in range(25 * 90)], Fraction(1, 1000), audio=tone(90.0))
    short = write_clip(tmp_path / "short.mp4", [40 * i for i in range(25)], Fraction(1, 1000))
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", str(long), str(short), "-o", str(out), "--model", str(tiny_model),
                                    "--tasks", "", "--window-s", "2", "--timeout-s", "1.5"])
    assert res.exit_code == 1, res.output
    rows = dict(duckdb.connect().execute(f"SELECT path, coalesce(error, status) FROM read_parquet('{out}/sources/*/source.parquet')").fetchall())
    assert rows[str(long)].startswith("timed out") and rows[str(short)] == "ok"
