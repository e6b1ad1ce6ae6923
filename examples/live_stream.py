"""A live stream over loopback: one process sends a clip as MPEG-TS over TCP in real time,
onepass reads it as it arrives.

    python examples/live_stream.py [OUT]
"""

import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import av

here = Path(__file__).parent
out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/example_live")
clip = here / "clips" / "inspection_2.mp4"
url = "tcp://127.0.0.1:47913"


def serve():
    """Remux the clip to a TCP listener, pacing packets at real time (a camera would)."""
    with av.open(clip) as src, av.open(url + "?listen=1", "w", format="mpegts") as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in (src.streams.video[0], src.streams.audio[0])}
        t0 = time.monotonic()
        for packet in src.demux(src.streams.video[0], src.streams.audio[0]):
            if packet.dts is None:
                continue
            due = float(packet.pts * packet.time_base) if packet.pts is not None else 0.0
            time.sleep(max(0.0, due - (time.monotonic() - t0)))
            packet.stream = streams[packet.stream.index]
            dst.mux(packet)


if __name__ == "__main__":
    # a separate process: PyAV holds the GIL while FFmpeg waits on the socket
    sender = multiprocessing.Process(target=serve, daemon=True)
    sender.start()
    time.sleep(1.0)  # the listener is up; onepass connects as a client
    subprocess.run(["onepass", "run", url, "-o", str(out), "--window-s", "10"], check=True)
    sender.join(timeout=10)
    subprocess.run(["onepass", "query", str(out), "SELECT source_id, status, windows FROM sources"], check=True)
    subprocess.run(["onepass", "query", str(out), "SELECT frame_ms, text FROM captions ORDER BY frame_ms"], check=True)
    subprocess.run(["onepass", "query", str(out), "SELECT start_ms, end_ms, speaker, text FROM transcripts ORDER BY start_ms"], check=True)
