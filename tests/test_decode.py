"""Decode: which frame is picked for each second, the fast-mode lag bound, audio timing."""

import subprocess
from fractions import Fraction

import av
import numpy as np
import pytest

from onepass.operators.decode import DecodeError, MediaReader, VideoFrame
from conftest import tool
from synth import read_index, tone, write_audio_only, write_clip


def expected_picks(times_s: list[Fraction], fps: Fraction = Fraction(1)) -> list[int]:
    """Independent statement of the rule: for each t_k the first frame with pts >= t_k (deduplicated)."""
    order = sorted(range(len(times_s)), key=lambda i: times_s[i])
    t0, end = times_s[order[0]], times_s[order[-1]]
    picks, k = [], 0
    while t0 + k / fps <= end:
        t_k = t0 + k / fps
        first = next(i for i in order if times_s[i] >= t_k)
        if not picks or picks[-1] != first:
            picks.append(first)
        k += 1
    return picks


def decode_all(path, **kw):
    frames, chunks = [], []
    with MediaReader(path, **kw) as media:
        for item in media.items():
            (frames if isinstance(item, VideoFrame) else chunks).append(item)
        return media, frames, chunks


CASES = {
    "25fps": ([40 * i for i in range(250)], Fraction(1, 1000), 25),
    "29.97fps": ([1001 * i for i in range(300)], Fraction(1, 30000), Fraction(30000, 1001)),
    "23.976fps": ([1001 * i for i in range(240)], Fraction(1, 24000), Fraction(24000, 1001)),
    # variable frame rate: bursts at 50 fps, stretches at 5 fps and a 2.3 s hole
    "vfr": (
        sorted({*range(0, 2000, 20), *range(2000, 5000, 200), *range(7300, 9000, 33)}),
        Fraction(1, 1000),
        25,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_exact_mode_picks_the_first_frame_at_or_after_each_second(tmp_path, name):
    pts, tb, rate = CASES[name]
    path = write_clip(tmp_path / f"{name}.mp4", pts, tb, rate=rate)
    times = [Fraction(p) * tb for p in pts]
    media, frames, _ = decode_all(path, mode="exact")
    got = [read_index(f.rgb) for f in frames]
    assert got == expected_picks(times)
    for f, i in zip(frames, got):
        assert f.frame_ms == round(times[i] * 1000)  # the frame's own exact pts
    assert media.stats.video_frames_decoded == len(pts)


@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_mode_lags_at_most_250_ms_and_keeps_exact_times(tmp_path, name):
    pts, tb, rate = CASES[name]
    path = write_clip(tmp_path / f"{name}.mp4", pts, tb, rate=rate)
    times = [Fraction(p) * tb for p in pts]
    exact = expected_picks(times)
    media, frames, _ = decode_all(path, mode="fast")
    assert len(frames) == len(exact)
    for f, want in zip(frames, exact):
        i = read_index(f.rgb)
        assert f.frame_ms == round(times[i] * 1000)
        assert 0 <= (times[i] - times[want]) * 1000 <= 250
    assert media.stats.video_frames_decoded < len(pts)  # it really skipped work


def test_fps_half_and_two(tmp_path):
    pts = [40 * i for i in range(250)]
    path = write_clip(tmp_path / "c.mp4", pts, Fraction(1, 1000))
    for fps in (Fraction(1, 2), Fraction(2)):
        _, frames, _ = decode_all(path, mode="exact", fps=float(fps))
        assert [read_index(f.rgb) for f in frames] == expected_picks([Fraction(p, 1000) for p in pts], fps)


def test_frames_are_not_accumulated(tmp_path):
    """Decode runs only as far as it is read: the first kept frame comes before the file is decoded."""
    path = write_clip(tmp_path / "c.mp4", [40 * i for i in range(500)], Fraction(1, 1000))
    with MediaReader(path, mode="exact") as media:
        items = media.items()
        first = next(items)
        assert isinstance(first, VideoFrame) and first.frame_ms == 0
        assert media.stats.video_frames_decoded < 50  # of 500: nothing runs ahead of the reader
        rest = sum(isinstance(i, VideoFrame) for i in items)
        assert rest == 19 and media.stats.video_frames_decoded == 500


def test_audio_starts_where_the_tone_starts_and_has_the_right_length(tmp_path):
    wave = tone(6.0, start_s=1.5, rate=16000)
    path = write_clip(tmp_path / "av.mp4", [40 * i for i in range(150)], Fraction(1, 1000), audio=wave)
    _, frames, chunks = decode_all(path)
    audio = np.concatenate([c.samples for c in chunks])
    assert abs(audio.size - 6.0 * 16000) <= 640
    start_ms = chunks[0].start_ms
    onset = start_ms + np.argmax(np.abs(audio) > 0.1) * 1000 // 16000
    assert abs(onset - 1500) <= 40
    assert [c.start_ms for c in chunks] == sorted(c.start_ms for c in chunks)


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_audio_only_sources_are_resampled_to_16k(tmp_path, rate):
    path = write_audio_only(tmp_path / f"a{rate}.wav", tone(2.0, rate=rate, start_s=0.5), rate=rate)
    media, frames, chunks = decode_all(path)
    assert not frames and not media.info.has_video and media.info.sample_rate_hz == rate
    audio = np.concatenate([c.samples for c in chunks])
    assert abs(audio.size - 32000) <= 640
    onset_ms = np.argmax(np.abs(audio) > 0.1) / 16
    assert abs(onset_ms - 500) <= 40


def independent_pts_ms(path) -> list[Fraction]:
    """Every video packet's time relative to the container's start: the difference of the two
    instants, each rounded to whole ms half up (onepass's one conversion), in seconds."""
    def ms(t: Fraction) -> int:
        return int(t * 1000 + Fraction(1, 2))

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        origin = ms(Fraction(c.start_time or 0, 1_000_000))
        pts = sorted(Fraction(ms(Fraction(p.pts) * v.time_base) - origin, 1000) for p in c.demux(v) if p.pts is not None)
    return pts


def _ffmpeg(*args: str) -> None:
    subprocess.run([tool("ffmpeg"), "-v", "error", "-y", *args], check=True)


# codec variants made with the ffmpeg CLI (the product decodes with PyAV; ffmpeg only makes inputs)
_LAVFI_VIDEO = ["-f", "lavfi", "-i", "testsrc2=size=320x180:rate={rate}:duration=6"]
_LAVFI_AUDIO = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=6"]
CORPUS = {
    "h264_bframes.mp4": (25, ["-c:v", "libx264", "-bf", "3", "-g", "50", "-c:a", "aac"]),
    "mpeg2_late_start.mpg": (25, ["-c:v", "mpeg2video", "-c:a", "mp2", "-output_ts_offset", "2.5"]),
    "hevc.mp4": (30, ["-c:v", "libx265", "-x265-params", "log-level=error:bframes=4", "-tag:v", "hvc1", "-c:a", "aac"]),
    "vp9.webm": (24, ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus"]),
    "mpeg4.avi": (Fraction(30000, 1001), ["-c:v", "mpeg4", "-c:a", "mp3"]),
    "five_one.mp4": (25, ["-c:v", "libx264", "-c:a", "aac", "-ac", "6"]),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    for name, (rate, codec) in CORPUS.items():
        video = [x.format(rate=rate) for x in _LAVFI_VIDEO]
        _ffmpeg(*video, *_LAVFI_AUDIO, *codec, "-shortest", str(folder / name))
    return folder


def test_every_codec_variant_against_an_independent_demux(corpus):
    videos = sorted(corpus.iterdir())
    assert len(videos) == len(CORPUS)
    for path in videos:
        times = independent_pts_ms(path)
        media, frames, _ = decode_all(path, mode="exact")
        want = [times[i] for i in expected_picks(times)]
        assert len(want) >= 5, path.name
        assert [f.frame_ms for f in frames] == [round(t * 1000) for t in want], path.name
        assert media.stats.video_frames_decoded == len(times), path.name
        assert media.stats.corrupt_packets == 0
        h, w = frames[0].rgb.shape[:2]
        assert (w, h) == (media.info.width, media.info.height) == (320, 180)


def test_late_start_offset_is_kept(corpus):
    path = corpus / "mpeg2_late_start.mpg"
    probe = subprocess.run([tool("ffprobe"), "-v", "error", "-show_entries", "format=start_time", "-of", "csv=p=0", str(path)],
                           check=True, capture_output=True, text=True).stdout
    media, frames, _ = decode_all(path)
    assert media.info.start_ms == round(float(probe) * 1000) and media.info.start_ms >= 2000
    # times are relative to the source's start (here the audio's first packet, 10 ms before the video's)
    assert frames[0].frame_ms == independent_pts_ms(path)[0] * 1000 < 100


def test_five_one_audio_is_downmixed(corpus):
    media, frames, chunks = decode_all(corpus / "five_one.mp4")
    assert media.info.channels == 6 and len(frames) == 6
    audio = np.concatenate([c.samples for c in chunks])
    assert abs(audio.size - media.info.duration_ms * 16) <= 640
    # the 440 Hz tone survives the downmix at a sane level (not summed into clipping, not lost)
    spectrum = np.abs(np.fft.rfft(audio[16000:32000]))
    assert abs(np.argmax(spectrum) - 440) <= 1 and 0.05 < np.sqrt(np.mean(audio**2)) < 0.9


def test_rotation_metadata_is_applied(tmp_path):
    src = write_clip(tmp_path / "src.mp4", [40 * i for i in range(50)], Fraction(1, 1000))
    rotated = tmp_path / "rot.mp4"
    _ffmpeg("-i", str(src), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated))
    media, frames, _ = decode_all(rotated)
    assert frames[0].rgb.shape == (256, 96, 3)
    # the same picture as the ffmpeg command line shows it (it applies the display matrix)
    raw = subprocess.run(
        [tool("ffmpeg"), "-v", "error", "-i", str(rotated), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        check=True, capture_output=True,
    ).stdout
    reference = np.frombuffer(raw, np.uint8).reshape(256, 96, 3)
    assert np.abs(frames[0].rgb.astype(int) - reference.astype(int)).max() <= 2


def test_errors_name_the_source(tmp_path):
    bad = tmp_path / "random.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(DecodeError) as err:
        MediaReader(bad)
    assert str(bad) in str(err.value) and err.value.reason
    with pytest.raises(DecodeError, match="directory"):
        MediaReader(tmp_path)
    with pytest.raises(DecodeError):
        MediaReader(tmp_path / "missing.mp4")


def test_corrupt_packets_are_skipped_and_counted(tmp_path):
    # MPEG-TS has no index to break, so the damage lands in packets
    path = write_clip(tmp_path / "c.ts", [40 * i for i in range(250)], Fraction(1, 1000), gop=25)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(1)
    for off in rng.integers(len(data) // 4, len(data) - 1000, size=20):
        data[off : off + 200] = rng.bytes(200)
    broken = tmp_path / "broken.ts"
    broken.write_bytes(bytes(data))
    media, frames, _ = decode_all(broken, mode="exact")
    assert len(frames) >= 5  # the run goes on past the damage
    assert media.stats.corrupt_packets + len(media.stats.errors) > 0 or media.stats.video_frames_decoded < 250
