"""Segment decode (MediaReader.video_segment, and windows cut from segments): the frames kept by decoding a file in segments,
each from a keyframe before its start, are exactly those of one pass from the start: same
frames, same times, same sampling indices, same pixels; over B-frames, HEVC, VFR, a late first
pts and an AVI, in both decode modes."""

import hashlib
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import tool
from hypothesis import given, settings
from hypothesis import strategies as st

from onepass.operators.decode import MediaReader, VideoFrame, plan_segments, segment_items
from onepass.pipeline.windows import AudioPart, FramePart, cut_windows
from synth import write_clip

_VIDEO = ["-f", "lavfi", "-i", "testsrc2=size=320x180:rate={rate}:duration=14"]
_AUDIO = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=14"]
VARIANTS = {
    "h264_bframes.mp4": (25, ["-c:v", "libx264", "-bf", "3", "-g", "30", "-c:a", "aac"]),
    "hevc_bframes.mp4": (30, ["-c:v", "libx265", "-x265-params", "log-level=error:bframes=4:keyint=45", "-tag:v", "hvc1", "-c:a", "aac"]),
    "mpeg2_late_start.mpg": (25, ["-c:v", "mpeg2video", "-g", "25", "-c:a", "mp2", "-output_ts_offset", "2.5"]),
    "mpeg4_ntsc.avi": (Fraction(30000, 1001), ["-c:v", "mpeg4", "-g", "40", "-c:a", "mp3"]),
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("segments")
    for name, (rate, codec) in VARIANTS.items():
        subprocess.run([tool("ffmpeg"), "-v", "error", "-y", *[x.format(rate=rate) for x in _VIDEO], *_AUDIO, *codec,
                        "-shortest", str(folder / name)], check=True)
    # variable frame rate: gaps, bursts, a 3 s hole; B-frames, a keyframe every 20 frames
    rng = np.random.default_rng(5)
    ticks = np.cumsum(rng.choice([20, 33, 40, 90, 250], size=220, p=[0.3, 0.3, 0.2, 0.15, 0.05]))
    ticks[120:] += 3000
    write_clip(folder / "vfr_gaps.mp4", [int(t) for t in ticks], Fraction(1, 1000), gop=20)
    return folder


def sequential(path, mode) -> list[VideoFrame]:
    with MediaReader(path, mode=mode, audio=False) as media:
        return [x for x in media.items() if isinstance(x, VideoFrame)]


def segmented(path, mode, bounds: list[int]) -> list[VideoFrame]:
    with MediaReader(path, mode=mode, audio=False) as media:
        t0 = media.video_origin()
    out = []
    edges = [0, *bounds, None]
    for a, b in zip(edges, edges[1:]):
        with MediaReader(path, mode=mode, audio=False) as media:  # a reader per segment, as a worker would
            out += list(media.video_segment(a, b, t0))
    return out


def same(got: list[VideoFrame], want: list[VideoFrame]) -> None:
    assert [(f.frame_ms, f.index) for f in got] == [(f.frame_ms, f.index) for f in want]
    assert all(np.array_equal(g.rgb, w.rgb) for g, w in zip(got, want))


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_segments_at_window_edges_equal_one_pass(clips, mode):
    for path in sorted(clips.iterdir()):
        want = sequential(path, mode)
        assert len(want) >= 10, path.name
        for bounds in ([5000], [3000, 6000, 9000, 12000], [1000, 10000]):
            same(segmented(path, mode, bounds), want)


@settings(max_examples=12, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=17000), min_size=1, max_size=4, unique=True), st.sampled_from(["fast", "exact"]),
       st.sampled_from(sorted(VARIANTS) + ["vfr_gaps.mp4"]))
def test_segments_at_any_cut_equal_one_pass(clips, bounds, mode, name):
    path = clips / name
    same(segmented(path, mode, sorted(bounds)), sequential(path, mode))


def cut(path, mode, window_s: int, spans, context=(0, 0)) -> tuple[list, dict, list]:
    """(frames, audio parts by window, window specs) of cut_windows over each span in turn."""
    frames, audio, specs = [], {}, []
    width = window_s * 1000
    for a, b in spans:
        with MediaReader(path, mode=mode) as media:
            whole = (a, b) == (0, None)
            parts = cut_windows(media, "clip", window_s=window_s, segment=None if whole else (a // width, None if b is None else b // width),
                                items=None if whole else segment_items(media, a, b, audio_after_ms=context[1]), context_ms=context)
            for part in parts:
                if isinstance(part, FramePart):
                    frames.append((part.index, part.frame_ms, hashlib.sha1(part.rgb.tobytes()).hexdigest()))
                elif isinstance(part, AudioPart):
                    assert part.index not in audio
                    audio[part.index] = hashlib.sha1(part.samples.tobytes()).hexdigest()
                else:
                    specs.append(part)
    return frames, audio, specs


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_segmented_windows_equal_one_pass(clips, mode):
    """Windows cut from segments (frames from a keyframe before each segment, audio from the start
    of the file) are byte-identical to one pass: the same frames, audio parts and specs."""
    for path in sorted(clips.iterdir()):
        want = cut(path, mode, 2, [(0, None)])
        assert len(want[2]) >= 7 and (want[1] or path.name == "vfr_gaps.mp4"), path.name
        for spans in (plan_segments(14_000, 4_000, 4, 2_000), [(0, 2_000), (2_000, None)], [(0, 6_000), (6_000, 8_000), (8_000, None)]):
            assert len(spans) > 1
            got = cut(path, mode, 2, spans)
            assert got == want, (path.name, spans)


def test_segmented_windows_with_audio_context_equal_one_pass(clips):
    """The audio context a file's windows carry (before and after, CONTEXT_MS) is the same whether
    the file is cut in one pass or in segments: a segment keeps the context before its first
    window and decodes audio that far past its end."""
    from onepass.pipeline.windows import CONTEXT_MS

    for path in sorted(clips.iterdir()):
        want = cut(path, "fast", 2, [(0, None)], CONTEXT_MS)
        assert want[2] and any(s.audio_before and s.audio_after for s in want[2]) == bool(want[1]), path.name
        for spans in ([(0, 4_000), (4_000, 10_000), (10_000, None)],):
            assert cut(path, "fast", 2, spans, CONTEXT_MS) == want, (path.name, spans)


def test_plan_segments():
    assert plan_segments(40 * 60_000, 10 * 60_000, 2, 30_000) == [(0, 1_200_000), (1_200_000, None)]
    assert plan_segments(40 * 60_000, 10 * 60_000, 16, 30_000) == [(0, 600_000), (600_000, 1_200_000), (1_200_000, 1_800_000), (1_800_000, None)]
    assert plan_segments(19 * 60_000, 10 * 60_000, 16, 30_000) == [(0, None)]  # shorter than two segments
    assert plan_segments(None, 10 * 60_000, 16, 30_000) == [(0, None)]  # length unknown
    assert plan_segments(40 * 60_000, 0, 16, 30_000) == [(0, None)]  # off
    assert plan_segments(40 * 60_000, 10 * 60_000, 1, 30_000) == [(0, None)]  # one worker
    assert all(a % 30_000 == 0 for a, _ in plan_segments(37 * 60_000 + 1234, 7 * 60_000, 16, 30_000))


def test_pipeline_decodes_a_long_file_in_segments(tmp_path, tiny_model):
    """A file longer than two segments is decoded by tasks side by side (decode_segments > 1 in its
    row) and every table equals a one-pass run's; a short file stays one pass."""
    import duckdb
    from click.testing import CliRunner

    from onepass.pipeline.cli import main
    from synth import tone

    src = tmp_path / "in"
    src.mkdir()
    write_clip(src / "long.mp4", [40 * i for i in range(600)], Fraction(1, 1000), audio=tone(24.0, start_s=0.5, freq_hz=300))
    write_clip(src / "short.mp4", [40 * i for i in range(100)], Fraction(1, 1000), audio=tone(4.0, start_s=0.5, freq_hz=500))
    got = {}
    for minutes in ("0", "0.1"):  # 0: never split; 0.1: 6-s segments (at most one per CPU), cut at 10 s (2 CPUs)
        out = tmp_path / f"out{minutes}"
        res = CliRunner().invoke(main, ["run", str(src), "-o", str(out), "--model", str(tiny_model), "--window-s", "5",
                                        "--tasks", "captions,transcript", "--segment-minutes", minutes])
        assert res.exit_code == 0, res.output
        con = duckdb.connect()
        got[minutes] = {t: con.execute(f"SELECT * FROM read_parquet('{out}/sources/*/{t}.parquet') ORDER BY ALL").fetchall()
                        for t in ("captions", "transcripts", "speakers")}
        got[minutes]["sources"] = con.execute(f"SELECT path, status, windows, duration_ms, decode_segments FROM "
                                              f"read_parquet('{out}/sources/*/source.parquet') ORDER BY path").fetchall()
    import ray

    ray.shutdown()
    segs = {Path(r[0]).name: r[4] for r in got["0.1"]["sources"]}
    assert segs["long.mp4"] >= 2 and segs["short.mp4"] == 1, got["0.1"]["sources"]
    assert all(r[4] == 1 for r in got["0"]["sources"])
    assert [r[:4] for r in got["0.1"]["sources"]] == [r[:4] for r in got["0"]["sources"]]
    assert got["0"]["captions"]
    for t in ("captions", "transcripts", "speakers"):
        assert got["0.1"][t] == got["0"][t], t
