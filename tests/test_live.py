"""Live input, each sent by a test process on loopback: TCP (then Ctrl-C), UDP, and an HLS playlist
over HTTP with standard input in the same run. Rows are committed window by window."""

from __future__ import annotations

import functools
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import duckdb
import pytest

from subproc import ctrl_c_reaches_it
from synth import tone, write_clip
from conftest import tool



@pytest.fixture(scope="module")
def ts_clip(tmp_path_factory) -> Path:
    """12 s of H.264 + AAC remuxed to MPEG-TS (what cameras and encoders send)."""
    root = tmp_path_factory.mktemp("live")
    mp4 = write_clip(root / "cam.mp4", [40 * i for i in range(300)], Fraction(1, 1000), audio=tone(12.0, freq_hz=300), bframes=0)
    ts = root / "cam.ts"
    subprocess.run([tool("ffmpeg"), "-v", "error", "-y", "-i", str(mp4), "-c", "copy", "-f", "mpegts", str(ts)], check=True)
    return ts


def onepass(url: str, out: Path, model: Path, *extra, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "onepass.pipeline.cli", "run", url, "-o", str(out), "--model", str(model),
                             "--window-s", "4", *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=ctrl_c_reaches_it, **kw)


def q(sql: str):
    return duckdb.connect().execute(sql)


def sources(out: Path) -> list[tuple]:
    return q(f"SELECT status, windows, error FROM read_parquet('{out}/sources/*/source.parquet')").fetchall()


def window_folders(out: Path) -> list[Path]:
    """Committed window folders: not the hidden .NAME.tmp a commit stages in (pathlib's * matches
    it; CI once counted a window mid-commit and expected the stopped row to count it too)."""
    return sorted(p for p in (out / "sources").glob("*~w*")
                  if not p.name.startswith(".") and ((p / "source.parquet").exists() or any(p.glob("*.parquet"))))


def send(ts: Path, url: str, *, loop: bool = False) -> subprocess.Popen:
    """ffmpeg as the camera: the clip at real time (looped: until killed)."""
    return subprocess.Popen([tool("ffmpeg"), "-v", "error", "-re", *(["-stream_loop", "-1"] if loop else []), "-i", str(ts),
                             "-c", "copy", "-f", "mpegts", url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def listening(port: int, udp: bool = False) -> bool:
    """A socket of this machine is bound to ``port`` (TCP: listening; UDP: bound)."""
    r = subprocess.run([tool("ss"), "-Hln" + ("u" if udp else "t"), f"sport = :{port}"], capture_output=True, text=True, check=True)
    return bool(r.stdout.strip())


def wait_until(condition, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        if time.time() > deadline:
            pytest.fail(f"waited {timeout_s:.0f} s for {what}")
        time.sleep(0.05)


def test_tcp_stream_then_ctrl_c_keeps_committed_windows(ts_clip, tmp_path, tiny_model):
    port = 47000 + os.getpid() % 1000
    sender = send(ts_clip, f"tcp://127.0.0.1:{port}?listen=1", loop=True)
    wait_until(lambda: listening(port) or sender.poll() is not None, f"the sender to listen on port {port}")
    out = tmp_path / "out"
    proc = onepass(f"tcp://127.0.0.1:{port}", out, tiny_model)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(window_folders(out)) < 2 and proc.poll() is None:
            time.sleep(0.1)
        assert len(window_folders(out)) >= 2, proc.communicate(timeout=30)[0]
        proc.send_signal(signal.SIGINT)
        log = proc.communicate(timeout=60)[0]
    finally:
        sender.kill()
        proc.kill()
    assert proc.returncode == 130, log
    assert "stopped" in log
    rows = sources(out)
    assert len(rows) == 1 and rows[0][0] == "stopped" and rows[0][1] >= 2, rows
    n = q(f"SELECT count(DISTINCT start_ms // 4000), min(start_ms) FROM read_parquet('{out}/sources/*/speakers.parquet')").fetchone()
    assert n[0] >= 2 and n[1] < 4000  # every committed window's rows are readable (the tone is one voice)
    # the report reads the committed window folders and says the stream was stopped
    from onepass.pipeline.report import write_reports

    index, page = write_reports(out, tmp_path / "report")
    html = page.read_text()
    assert "class='badge stopped'" in html and "every committed window" in html
    turns = q(f"SELECT count(*) FROM read_parquet('{out}/sources/*/speakers.parquet')").fetchone()[0]
    assert html.count("class='turn'") == turns >= 2
    assert "badge stopped" in index.read_text()


def test_udp_stream_ends_after_the_idle_timeout(ts_clip, tmp_path, tiny_model):
    port = 48000 + os.getpid() % 1000
    out = tmp_path / "out"
    # a receive buffer that holds the whole clip (FFmpeg's udp options, in the URL as a user gives
    # them): datagrams are not lost while the machine is busy, so every window arrives
    proc = onepass(f"udp://127.0.0.1:{port}?buffer_size=4194304&fifo_size=100000", out, tiny_model, "--stream-timeout-s", "3")
    # onepass listens before the sender starts (UDP has no handshake)
    wait_until(lambda: listening(port, udp=True) or proc.poll() is not None, f"onepass to bind UDP port {port}")
    sender = send(ts_clip, f"udp://127.0.0.1:{port}?pkt_size=1316")
    try:
        sender.wait(timeout=60)
        log = proc.communicate(timeout=120)[0]
    finally:
        proc.kill()
    assert proc.returncode == 0, log
    rows = sources(out)
    assert rows[0][0] == "ok" and rows[0][1] == 3, rows  # 12 s in 4 s windows
    ends = q(f"SELECT max(end_ms) FROM read_parquet('{out}/sources/*/speakers.parquet')").fetchone()[0]
    # speaker turns reach into the last committed window (a lost window is a lost 4 s, not more)
    assert 4000 * (rows[0][1] - 1) < ends <= 12100, (ends, rows)


def test_an_hls_playlist_and_standard_input_in_one_run(ts_clip, tmp_path, tiny_model):
    """Two live inputs at once (an HLS playlist over HTTP, and MPEG-TS on standard input) feed the
    one backbone; each ends on its own and is committed whole."""
    hls = tmp_path / "hls"
    hls.mkdir()
    subprocess.run([tool("ffmpeg"), "-v", "error", "-i", str(ts_clip), "-c", "copy", "-f", "hls", "-hls_time", "4",
                    "-hls_playlist_type", "vod", str(hls / "live.m3u8")], check=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(hls))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out = tmp_path / "out"
    url = f"http://127.0.0.1:{server.server_port}/live.m3u8"
    try:
        with open(ts_clip, "rb") as stdin:
            proc = onepass(url, out, tiny_model, "-", stdin=stdin)
            log = proc.communicate(timeout=180)[0]
    finally:
        server.shutdown()
    assert proc.returncode == 0, log
    got = dict((path, rest) for path, *rest in q(f"SELECT path, status, windows FROM read_parquet('{out}/sources/*/source.parquet')").fetchall())
    assert got == {url: ["ok", 3], "pipe:0": ["ok", 3]}, got
    assert len(window_folders(out)) == 6  # 3 windows of each
