"""Turn the command line's INPUTS (files, folders, globs, URLs, '-') into named sources."""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from .config import MEDIA_EXTENSIONS, STREAM_SCHEMES

__all__ = ["Source", "expand_inputs", "content_fingerprint", "source_fingerprint", "stdin_fifo"]


@dataclass(frozen=True)
class Source:
    id: str  # safe file name: readable stem + hash of the full location
    location: str  # path or URL as FFmpeg opens it
    is_stream: bool = False


def _safe_id(location: str) -> str:
    stem = Path(location.rstrip("/")).stem if "://" not in location else location.split("://", 1)[1]
    stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_.")[:40] or "source"
    digest = hashlib.sha1(location.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{stem}-{digest}"


def _source(location: str, stream: bool = False) -> Source:
    sid = _safe_id(location)
    if stream:  # every session of a live stream is a recording of its own
        sid += "-" + time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return Source(id=sid, location=location, is_stream=stream)


def expand_inputs(inputs: list[str]) -> tuple[list[Source], list[tuple[str, str]]]:
    """Sources found, and (input, reason) for inputs that name nothing usable."""
    found: dict[str, Source] = {}
    problems: list[tuple[str, str]] = []
    for item in inputs:
        if item == "-":
            found.setdefault("pipe:0", Source(id="stdin-" + time.strftime("%Y%m%dT%H%M%S", time.gmtime()), location="pipe:0", is_stream=True))
        elif item.startswith(STREAM_SCHEMES) or re.match(r"^[a-z]+://", item):
            src = _source(item, stream=not item.lower().split("?")[0].endswith(tuple(MEDIA_EXTENSIONS)))
            found.setdefault(item, src)
        elif os.path.isdir(item) and not item.lower().endswith(tuple(MEDIA_EXTENSIONS)):
            for root, dirs, files in os.walk(item, followlinks=False):
                dirs.sort()
                for name in sorted(files):
                    if os.path.splitext(name)[1].lower() in MEDIA_EXTENSIONS:
                        path = os.path.abspath(os.path.join(root, name))
                        found.setdefault(path, _source(path))
        elif os.path.lexists(item):
            path = os.path.abspath(item)
            found.setdefault(path, _source(path))  # decode reports what is wrong with it
        elif any(ch in item for ch in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                problems.append((item, "glob matched no files"))
            for m in matches:
                if os.path.isfile(m):
                    path = os.path.abspath(m)
                    found.setdefault(path, _source(path))
        else:
            problems.append((item, "no such file, folder or URL"))
    return list(found.values()), problems


def content_fingerprint(location: str) -> str:
    """size + mtime + hash of the first and last MiB: cheap, and changes when the file does."""
    try:
        st = os.stat(location)
    except OSError:
        return "unreadable"
    h = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}".encode())
    try:
        with open(location, "rb") as f:
            h.update(f.read(1 << 20))
            if st.st_size > 2 << 20:
                f.seek(-(1 << 20), os.SEEK_END)
                h.update(f.read(1 << 20))
    except OSError:
        return "unreadable"
    return h.hexdigest()[:16]


def source_fingerprint(location: str, telemetry: str | None = None) -> str:
    """What a rerun compares to skip a committed file: its content, and its telemetry sidecar's
    (adding, changing or removing the sidecar redoes the file)."""
    from .telemetry import find_sidecar

    sidecar = find_sidecar(location, telemetry)
    return content_fingerprint(location) + (f"+{content_fingerprint(str(sidecar))}" if sidecar else "")


def stdin_fifo() -> str:
    """This process's standard input for a decoder in another process (a Ray worker, which does
    not share it): a named pipe, mode 0600, in a private temporary folder, fed by a thread.
    The decoder must run on this machine."""
    folder = tempfile.mkdtemp(prefix="onepass-stdin-")
    path = os.path.join(folder, "stdin")
    os.mkfifo(path, 0o600)

    def pump() -> None:
        try:
            with open(path, "wb") as out:  # blocks until the decoder opens it
                while chunk := sys.stdin.buffer.read1(1 << 16):
                    out.write(chunk)
        except OSError:  # the decoder went away: nothing more to hand over
            pass
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    threading.Thread(target=pump, name="stdin-pump", daemon=True).start()
    return path
