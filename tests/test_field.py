"""Field inspection (issue 25): where each moment was (telemetry sidecars -> positions on rows,
GeoJSON, the track on the page), the findings view, and the PDF report to hand over."""

import json
import subprocess
from fractions import Fraction
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from conftest import tool
from synth import tone, track_position, write_clip, write_dji_srt
from onepass.pipeline.cli import main
from onepass.pipeline.telemetry import EDGE_MS, MAX_GAP_MS, Fix, Track, TelemetryError, read_sidecar


# -- sidecars ------------------------------------------------------------------------------------
def test_dji_subtitle_layouts_and_csv_give_the_same_track(tmp_path):
    srt = read_sidecar(write_dji_srt(tmp_path / "a.SRT", 3000, step_ms=500))
    assert [f.time_ms for f in srt.fixes] == [0, 500, 1000, 1500, 2000, 2500] and srt.note is None
    lat, lon, alt = track_position(1500)
    assert srt.fixes[3] == Fix(1500, pytest.approx(lat, abs=1e-6), pytest.approx(lon, abs=1e-6), pytest.approx(alt, abs=1e-3))  # abs_alt, not rel_alt
    # Mavic 2's layout (with its "longtitude" typo) and the older GPS(longitude, latitude, altitude)
    (tmp_path / "m2.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\n[latitude : 47.1] [longtitude : 8.2] [altitude: 410.5]\n\n"
                                     "2\n00:00:01,000 --> 00:00:02,000\n[latitude : 47.2] [longtitude : 8.3] [altitude: 411.5]\n")
    (tmp_path / "p4.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nHOME(8.0,47.0) 2019.05.20\nGPS(8.2,47.1,410) BAROMETER:50.1\n")
    assert read_sidecar(tmp_path / "m2.srt").fixes == (Fix(0, 47.1, 8.2, 410.5), Fix(1000, 47.2, 8.3, 411.5))
    assert read_sidecar(tmp_path / "p4.srt").fixes == (Fix(0, 47.1, 8.2, 410.0),)
    (tmp_path / "t.csv").write_text("time_ms,latitude,longitude,altitude_m\n0,47.1,8.2,400\n1000,47.2,8.3,\nbad,row,here\n2000,0,0,0\n3000,95,8,1\n")
    t = read_sidecar(tmp_path / "t.csv")
    assert t.fixes == (Fix(0, 47.1, 8.2, 400.0), Fix(1000, 47.2, 8.3, None))
    assert t.note == "3 of 5 lines without a usable position skipped"  # a bad line, a (0, 0) fix (no GPS lock), latitude 95


def test_malformed_sidecars_are_refused_with_the_reason(tmp_path):
    cases = {"empty.csv": ("", "empty CSV"), "header.csv": ("t,lat,lon\n0,1,2\n", "starts with the header time_ms,latitude,longitude"),
             "subs.srt": ("1\n00:00:00,000 --> 00:00:01,000\nhello there\n", "no position in its 1 cues"),
             "binary.srt": ("\x00\x01garbage", "not a telemetry file")}
    for name, (text, reason) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(TelemetryError, match=reason):
            read_sidecar(tmp_path / name)
    with pytest.raises(TelemetryError, match="cannot read"):
        read_sidecar(tmp_path / "missing.csv")


def test_a_position_is_interpolated_between_fixes_and_none_in_a_gap():
    track = Track("x", (Fix(0, 10.0, 20.0, 100.0), Fix(1000, 11.0, 22.0, 200.0), Fix(1000 + MAX_GAP_MS + 1, 12.0, 24.0, None)))
    mid = track.at(250)
    assert (mid.latitude, mid.longitude, mid.altitude_m) == (10.25, 20.5, 125.0)
    assert track.at(1000) == track.fixes[1]
    assert track.at(1001) is None  # in a gap longer than MAX_GAP_MS: no made-up position
    assert track.at(-1) is None and track.at(track.fixes[-1].time_ms + EDGE_MS + 1) is None  # outside the track
    assert track.at(track.fixes[-1].time_ms + EDGE_MS).altitude_m is None


# -- through `onepass run` and `onepass export` --------------------------------------------------
def test_sidecars_put_positions_on_the_rows_of_a_run(tmp_path, tiny_model):
    clips = tmp_path / "clips"
    clips.mkdir()
    frames = [40 * i for i in range(25 * 20)]
    for name in ("drone", "csvclip", "broken", "plain"):
        write_clip(clips / f"{name}.mp4", frames, Fraction(1, 1000), audio=tone(20.0, start_s=0.5, freq_hz=300))
    write_dji_srt(clips / "drone.SRT", 20000, step_ms=100, skip=(6000, 13000))  # a 7 s GPS outage
    (clips / "csvclip.csv").write_text("time_ms,latitude,longitude\n" + "".join(
        f"{t},{track_position(t)[0]:.7f},{track_position(t)[1]:.7f}\n" for t in range(0, 20000, 1000)))
    (clips / "broken.csv").write_text("this is not telemetry\n")
    (clips / "plain.srt").write_text("1\n00:00:00,000 --> 00:00:02,000\nsubtitles, not a track\n")  # nothing to say
    out = tmp_path / "out"
    args = ["run", str(clips), "-o", str(out), "--model", str(tiny_model), "--tasks", "captions,transcript", "--window-s", "5",
            "--max-new-tokens", "4"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert f"warning: {clips / 'broken.mp4'}: telemetry sidecar ignored: {clips / 'broken.csv'}: a telemetry CSV starts with the header" in res.output
    assert "1 gap over 5 s" in res.output and "plain.srt" not in res.output  # subtitles beside a clip: not a track, no warning
    con = duckdb.connect()
    src = {Path(p).stem: (t, n) for p, t, n in con.execute(
        f"SELECT path, telemetry, telemetry_note FROM read_parquet('{out}/sources/*/source.parquet')").fetchall()}
    assert src["drone"][0] == str(clips / "drone.SRT") and "gap" in src["drone"][1]
    assert src["csvclip"] == (str(clips / "csvclip.csv"), None) and src["plain"] == (None, None)
    assert src["broken"][0] == str(clips / "broken.csv") and src["broken"][1].startswith("telemetry sidecar ignored")
    checked = 0
    for table in ("captions", "transcripts"):
        rows = con.execute(f"SELECT s.path, t.start_ms, t.latitude, t.longitude, t.altitude_m FROM read_parquet('{out}/sources/*/{table}.parquet') t "
                           f"JOIN read_parquet('{out}/sources/*/source.parquet') s USING (source_id)").fetchall()
        assert rows
        for path, start, lat, lon, alt in rows:
            name = Path(path).stem
            want = track_position(start)
            if name == "drone" and 5900 < start < 13000:  # in the outage (last fix 5.9 s, next 13 s): no position
                assert (lat, lon, alt) == (None, None, None), (table, start)
            elif name == "drone" and start <= 19900:  # the position at the row's start (fixes every 100 ms on a straight line)
                assert lat == pytest.approx(want[0], abs=2e-6) and lon == pytest.approx(want[1], abs=2e-6) and alt == pytest.approx(want[2], abs=0.01)
                checked += 1
            elif name == "csvclip" and start < 19000:  # fixes every second: interpolated (the track is a straight line)
                assert lat == pytest.approx(want[0], abs=2e-6) and lon == pytest.approx(want[1], abs=2e-6) and alt is None
                checked += 1
            elif name in ("broken", "plain"):
                assert (lat, lon, alt) == (None, None, None)
    assert checked >= 20
    # GeoJSON: every positioned row a point (RFC 7946 order: longitude, latitude, altitude) and the track
    res = CliRunner().invoke(main, ["export", str(out), "--format", "geojson", "-o", str(tmp_path / "geo")])
    assert res.exit_code == 0, res.output
    drone = json.loads(next((tmp_path / "geo").glob("drone-*.geojson")).read_text())
    assert drone["type"] == "FeatureCollection"
    kinds = [f["properties"]["kind"] for f in drone["features"]]
    assert kinds[0] == "track" and drone["features"][0]["geometry"]["type"] == "LineString"
    points = [f for f in drone["features"] if f["geometry"]["type"] == "Point"]
    n_positioned = con.execute(f"SELECT count(*) FROM (SELECT latitude FROM read_parquet('{out}/sources/drone-*/captions.parquet') UNION ALL "
                               f"SELECT latitude FROM read_parquet('{out}/sources/drone-*/transcripts.parquet')) WHERE latitude IS NOT NULL").fetchone()[0]
    assert len(points) == n_positioned and {"captions", "transcripts"} <= set(kinds)
    for f in points:
        lon, lat, alt = f["geometry"]["coordinates"]
        want = track_position(f["properties"]["start_ms"])
        assert lat == pytest.approx(want[0], abs=2e-6) and lon == pytest.approx(want[1], abs=2e-6) and "time" in f["properties"]
    assert not json.loads(next((tmp_path / "geo").glob("plain-*.geojson")).read_text())["features"]
    # a rerun skips them all; a changed sidecar redoes its clip only
    res = CliRunner().invoke(main, args)
    assert res.output.count("skipped (already done") == 4, res.output
    (clips / "broken.csv").write_text("time_ms,latitude,longitude\n" + "".join(f"{t},{47 + t / 1e5},8.0\n" for t in range(0, 21000, 1000)))
    res = CliRunner().invoke(main, args)
    assert res.output.count("skipped (already done") == 3 and "broken-" in res.output, res.output
    got = con.execute(f"SELECT start_ms, latitude FROM read_parquet('{out}/sources/broken-*/captions.parquet')").fetchall()
    assert got and all(lat == pytest.approx(47 + start / 1e5, abs=1e-6) for start, lat in got if start <= 20000), got


# -- findings and the PDF ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def inspected(tmp_path_factory):
    """An output folder whose rows are written directly (the model's answers are not the subject):
    two sources, answers flagged and not, transcript lines around them, positions on one."""
    from onepass.pipeline.writers import commit_source, source_row

    root = tmp_path_factory.mktemp("inspected")
    out = root / "out"
    for sid, name, positioned in (("a-1", "pipe_run.mp4", True), ("b-2", "tank.mp4", False)):
        clip = write_clip(root / name, [40 * i for i in range(25 * 12)], Fraction(1, 1000), audio=tone(12.0, freq_hz=300))
        pos = (lambda t: dict(zip(("latitude", "longitude", "altitude_m"), track_position(t)))) if positioned else (lambda t: {})
        commit_source(out, sid, {
            "sources": [source_row(sid, str(clip), None, status="ok", error=None, windows=2, config_fingerprint="x", model="default",
                                   telemetry=str(root / "pipe_run.SRT") if positioned else None)],
            "captions": [dict(source_id=sid, start_ms=t, end_ms=t + 1000, frame_ms=t, text=f"frame {t}", confidence=-0.1, **pos(t))
                         for t in range(0, 12000, 1000)],
            "transcripts": [dict(source_id=sid, start_ms=2500, end_ms=4200, speaker="S1", text=f"corrosion on flange {sid}", confidence=-0.2, **pos(2500)),
                            dict(source_id=sid, start_ms=4300, end_ms=5000, speaker="S2", text="noted", confidence=-0.2, **pos(4300)),
                            dict(source_id=sid, start_ms=8000, end_ms=9000, speaker="S1", text="all clear here", confidence=-0.2, **pos(8000))],
            "answers": [dict(source_id=sid, start_ms=2000, end_ms=6000, question="which components show a condition",
                             text=f"the flange of {name} has corrosion", confidence=-0.3, supported=True, **pos(2000)),
                        dict(source_id=sid, start_ms=7000, end_ms=10000, question="which components show a condition", text="none",
                             confidence=-0.3, supported=True, **pos(7000)),
                        dict(source_id=sid, start_ms=10000, end_ms=12000, question="what needs attention", text="[other speech]",
                             confidence=-0.3, supported=True, **pos(10000))],
        })
    return out


def test_the_findings_view_joins_each_flagged_answer_with_its_moment(inspected):
    from onepass.pipeline.writers import connect

    res = CliRunner().invoke(main, ["query", str(inspected), "SELECT source_id, start_ms, finding, remark FROM findings ORDER BY source_id"])
    assert res.exit_code == 0 and "corrosion on flange a-1" in res.output and "(2 rows)" in res.output, res.output
    rows = connect(inspected).execute("SELECT source_id, start_ms, frame_ms, finding, speaker, remark, latitude, altitude_m FROM findings "
                                      "ORDER BY source_id").fetchall()
    assert [r[:3] for r in rows] == [("a-1", 2000, 2000), ("b-2", 2000, 2000)]  # "none" and a marker are not findings
    a = rows[0]
    assert a[3] == "the flange of pipe_run.mp4 has corrosion" and a[4] == "S1, S2"
    assert a[5] == "S1: corrosion on flange a-1 / S2: noted"  # what was said while it lasted, in order
    assert a[6] == pytest.approx(track_position(2000)[0]) and a[7] == pytest.approx(track_position(2000)[2]) and rows[1][6] is None


def test_the_pdf_report_lists_every_finding(inspected, tmp_path):
    tool("chromium")
    report = tmp_path / "report"
    res = CliRunner().invoke(main, ["report", str(inspected), "-o", str(report), "--pdf"])
    assert res.exit_code == 0, res.output
    pdf = report / "report.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    text = subprocess.run([tool("pdftotext"), "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    flat = " ".join(text.split())
    for name in ("pipe_run.mp4", "tank.mp4"):
        assert f"the flange of {name} has corrosion" in flat, flat[:3000]  # every finding
    assert "Findings (2)" in flat and "corrosion on flange a-1" in flat and "47.377" in flat  # the remark and the position
    assert "onepass inspection report" in flat and "2 ok" in flat  # the cover's figures
    assert flat.count("has corrosion") >= 4  # on the cover's list and on each source's page
    assert text.count("\f") >= 3  # cover + a page per source
    html = (report / "index.html").read_text()
    assert html.index("Findings (2)") < html.index("id='sources'")  # findings first
    page = (report / "a-1.html").read_text()
    assert "id='track'" in page and page.index("Findings (1)") < page.index("id='stage'")
    assert "id='track'" not in (report / "b-2.html").read_text()  # no positions, no track


# -- known voices through `onepass run --voices` ---------------------------------------------------
def test_enrolled_voices_are_named_in_a_run_and_a_stranger_never(tmp_path, tiny_model):
    """benchmarks/bench_known_voices.py at CI size: 3 clips of 3 enrolled voices and 1 stranger."""
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_known_voices import NAMES, make_set, score

    clips, voices, _ = make_set(tmp_path / "set", 3, 25.0, seed=5)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", str(clips), "-o", str(out), "--model", str(tiny_model), "--tasks", "diarization",
                                    "--voices", str(voices)])
    assert res.exit_code == 0, res.output
    assert "enrolled: ana (" in res.output and (out / "voices.json").is_file()
    got = score(out, clips)
    assert got["stranger_named_s"] == 0, got  # the unenrolled voice never carries a name
    assert got["named_right"] >= 0.8, got
    said = duckdb.connect().execute(f"SELECT DISTINCT speaker FROM read_parquet('{out}/sources/*/speakers.parquet')").fetchall()
    assert {s for (s,) in said} & set(NAMES) and any(s.startswith("S") for (s,) in said)
    # a rerun with the same enrolment skips; another enrolment redoes (its names may change)
    res = CliRunner().invoke(main, ["run", str(clips), "-o", str(out), "--model", str(tiny_model), "--tasks", "diarization",
                                    "--voices", str(voices)])
    assert res.output.count("skipped (already done") == 3, res.output
    (voices / "ben.wav").unlink()
    res = CliRunner().invoke(main, ["run", str(clips), "-o", str(out), "--model", str(tiny_model), "--tasks", "diarization",
                                    "--voices", str(voices)])
    assert "skipped (already done" not in res.output and "enrolled: ana (" in res.output and "ben" not in res.output.split("source ")[0]
    said = duckdb.connect().execute(f"SELECT DISTINCT speaker FROM read_parquet('{out}/sources/*/speakers.parquet')").fetchall()
    assert "ben" not in {s for (s,) in said}
    (tmp_path / "nobody").mkdir()
    (tmp_path / "nobody" / "notes.txt").write_text("no recordings here")
    res = CliRunner().invoke(main, ["run", str(clips), "-o", str(tmp_path / "o2"), "--voices", str(tmp_path / "nobody")])
    assert res.exit_code == 2 and "no recordings" in res.output, res.output
