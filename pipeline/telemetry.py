"""Where each moment was: a telemetry sidecar beside a video gives positions to its rows.

Two formats:

* a drone's subtitle track (DJI writes ``<clip>.SRT`` beside ``<clip>.MP4``): one cue per frame or
  per second whose text holds the position, in any of DJI's layouts::

      [latitude: 47.377560] [longitude: 8.541690] [rel_alt: 50.100 abs_alt: 512.300]
      [latitude : 47.377560] [longtitude : 8.541690] [altitude: 512.3]
      GPS(8.541690,47.377560,512) BAROMETER:50.1

  the cue's start is the fix's time; altitude is the absolute one where the cue has it
  (``abs_alt``, ``altitude``, the third GPS value), else the height over take-off (``rel_alt``);
* a CSV ``<clip>.csv`` with the header ``time_ms,latitude,longitude[,altitude_m]``.

``--telemetry PATH`` names a sidecar for every file of the run, or a folder holding
``<clip stem>.srt|.SRT|.csv`` per clip. A row's position is the track's at the row's start,
linearly interpolated between the two fixes around it; a row in a gap longer than
:data:`MAX_GAP_MS` between fixes, or outside the track, has none (null), and so does every row of
a clip without a sidecar. A fix at latitude 0, longitude 0 (what a drone writes before its GPS
locks) or out of range is no fix. A sidecar that cannot be read, or whose lines are partly
malformed, gives a note (``sources.telemetry_note``, and a warning on the terminal), never an
error: the rows are kept, without positions where there are none."""

from __future__ import annotations

import bisect
import csv
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Fix", "Track", "TelemetryError", "read_sidecar", "find_sidecar", "load_track", "add_positions",
           "POSITION_COLUMNS", "MAX_GAP_MS"]

MAX_GAP_MS = 5000  # fixes farther apart than this are a gap: no position is made up across it
EDGE_MS = 1000  # a row up to this long after the last fix (its frame lasts) takes the last fix
POSITION_COLUMNS = ("latitude", "longitude", "altitude_m")
SIDECAR_SUFFIXES = (".srt", ".SRT", ".csv", ".CSV")


class TelemetryError(Exception):
    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


@dataclass(frozen=True)
class Fix:
    time_ms: int
    latitude: float
    longitude: float
    altitude_m: float | None = None


@dataclass(frozen=True)
class Track:
    path: str
    fixes: tuple[Fix, ...]  # in time order, one per instant
    note: str | None = None  # what was wrong with the sidecar (lines skipped, gaps), for the user

    @functools.cached_property
    def _times(self) -> list[int]:
        return [x.time_ms for x in self.fixes]

    def at(self, ms: int) -> Fix | None:
        """The position at ``ms`` (interpolated), or None in a gap or outside the track."""
        f = self.fixes
        if not f or ms < f[0].time_ms or ms > f[-1].time_ms + EDGE_MS:
            return None
        i = bisect.bisect_right(self._times, ms) - 1
        a = f[i]
        if i == len(f) - 1 or a.time_ms == ms:
            return a
        b = f[i + 1]
        if b.time_ms - a.time_ms > MAX_GAP_MS:
            return None
        w = (ms - a.time_ms) / (b.time_ms - a.time_ms)
        alt = None if a.altitude_m is None or b.altitude_m is None else a.altitude_m + w * (b.altitude_m - a.altitude_m)
        return Fix(ms, a.latitude + w * (b.latitude - a.latitude), a.longitude + w * (b.longitude - a.longitude), alt)


def _valid(lat: float, lon: float) -> bool:
    return -90 <= lat <= 90 and -180 <= lon <= 180 and not (lat == 0 and lon == 0) and lat == lat and lon == lon


_CUE_TIME = re.compile(r"(\d+):(\d{2}):(\d{2})[,.](\d{1,3})\s*-->")
_NUM = r"(-?\d+(?:\.\d+)?)"
_LAT = re.compile(r"\[\s*lat(?:itude)?\s*:\s*" + _NUM, re.I)
_LON = re.compile(r"\[\s*lon(?:g|gt)?(?:itude)?\s*:\s*" + _NUM, re.I)
_ABS_ALT = re.compile(r"abs_alt\s*:\s*" + _NUM, re.I)
_ALT = re.compile(r"\[\s*altitude\s*:\s*" + _NUM, re.I)
_REL_ALT = re.compile(r"rel_alt\s*:\s*" + _NUM, re.I)
_GPS = re.compile(r"GPS\s*\(\s*" + _NUM + r"\s*,\s*" + _NUM + r"(?:\s*,\s*" + _NUM + r")?\s*\)", re.I)


def _srt_fixes(text: str) -> tuple[list[Fix], int, int]:
    """(fixes, cues, cues without a usable position) of a DJI-style subtitle file."""
    fixes, cues, bad = [], 0, 0
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\r", "\n")):
        m = _CUE_TIME.search(block)
        if not m:
            if block.strip():
                bad += 1
            continue
        cues += 1
        h, mi, s, frac = m.groups()
        t = ((int(h) * 60 + int(mi)) * 60 + int(s)) * 1000 + int(frac.ljust(3, "0"))
        body = block[m.end():]
        lat = lon = alt = None
        if (la := _LAT.search(body)) and (lo := _LON.search(body)):
            lat, lon = float(la.group(1)), float(lo.group(1))
            a = _ABS_ALT.search(body) or _ALT.search(body) or _REL_ALT.search(body)
            alt = float(a.group(1)) if a else None
        elif g := _GPS.search(body):  # GPS(longitude, latitude[, altitude])
            lon, lat = float(g.group(1)), float(g.group(2))
            alt = float(g.group(3)) if g.group(3) else None
        if lat is None or not _valid(lat, lon):
            bad += 1
            continue
        fixes.append(Fix(t, lat, lon, alt))
    return fixes, cues, bad


def _csv_fixes(text: str, path) -> tuple[list[Fix], int, int]:
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise TelemetryError(path, "empty CSV")
    head = [c.strip().lower() for c in rows[0]]
    if head[:3] != ["time_ms", "latitude", "longitude"]:
        raise TelemetryError(path, "a telemetry CSV starts with the header time_ms,latitude,longitude[,altitude_m]; "
                                   f"this one starts {','.join(rows[0])[:80]!r}")
    has_alt = len(head) > 3 and head[3] == "altitude_m"
    fixes, bad = [], 0
    for row in rows[1:]:
        if not row or not "".join(row).strip():
            continue
        try:
            t, lat, lon = int(float(row[0])), float(row[1]), float(row[2])
            alt = float(row[3]) if has_alt and len(row) > 3 and row[3].strip() else None
        except (ValueError, IndexError):
            bad += 1
            continue
        if t < 0 or not _valid(lat, lon):
            bad += 1
            continue
        fixes.append(Fix(t, lat, lon, alt))
    return fixes, len(rows) - 1, bad


def read_sidecar(path: str | os.PathLike) -> Track:
    """The track of a sidecar (SRT or CSV by its suffix). TelemetryError when it cannot be read
    or holds no usable fix; lines that are not fixes are counted in the track's note."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TelemetryError(path, f"cannot read: {exc.strerror or exc}") from exc
    text = raw.decode("utf-8", errors="replace").lstrip("\ufeff")
    if path.suffix.lower() == ".csv":
        fixes, lines, bad = _csv_fixes(text, path)
        unit = "lines"
    else:
        fixes, lines, bad = _srt_fixes(text)
        unit = "cues"
    if not fixes:
        raise TelemetryError(path, f"no position in its {lines} {unit}" if lines else "not a telemetry file (no cues or rows)")
    by_time = {}
    for f in fixes:  # one fix per instant (the first), in time order
        by_time.setdefault(f.time_ms, f)
    ordered = tuple(by_time[t] for t in sorted(by_time))
    notes = []
    if bad:
        notes.append(f"{bad} of {lines} {unit} without a usable position skipped")
    gaps = sum(1 for a, b in zip(ordered, ordered[1:]) if b.time_ms - a.time_ms > MAX_GAP_MS)
    if gaps:
        notes.append(f"{gaps} gap{'s' if gaps > 1 else ''} over {MAX_GAP_MS // 1000} s between fixes: rows there have no position")
    return Track(str(path), ordered, "; ".join(notes) or None)


def find_sidecar(location: str, telemetry: str | None = None) -> Path | None:
    """The sidecar of a media file: ``--telemetry`` (a file, or a folder with ``<stem>.srt|.csv``),
    else ``<file without its suffix>.srt|.SRT|.csv`` beside it."""
    if "://" in location or location in ("-", "pipe:0"):
        return None
    media = Path(location)
    if telemetry:
        t = Path(telemetry)
        if not t.is_dir():
            return t
        folder = t
    else:
        folder = media.parent
    for suffix in SIDECAR_SUFFIXES:
        p = folder / (media.stem + suffix)
        if p.is_file() and p != media:
            return p
    return None


def load_track(location: str, telemetry: str | None = None) -> tuple[Track | None, Path | None, str | None]:
    """(track or None, the sidecar used or None, a note for the user or None)."""
    path = find_sidecar(location, telemetry)
    if path is None:
        return None, None, None
    try:
        track = read_sidecar(path)
    except TelemetryError as exc:
        if not telemetry and path.suffix.lower() == ".srt" and exc.reason.startswith("no position"):
            return None, None, None  # subtitles beside a clip, not a drone's track: nothing to say
        return None, path, f"telemetry sidecar ignored: {exc}"
    return track, path, (f"telemetry sidecar {path}: {track.note}" if track.note else None)


def add_positions(rows: dict[str, list[dict]], track: Track | None) -> None:
    """Set latitude, longitude and altitude_m on every caption, transcript and answer row: the
    track's position at the row's start, or None."""
    for table in ("captions", "transcripts", "answers"):
        for r in rows.get(table, []):
            fix = track.at(r["start_ms"]) if track is not None else None
            r["latitude"] = None if fix is None else round(fix.latitude, 7)
            r["longitude"] = None if fix is None else round(fix.longitude, 7)
            r["altitude_m"] = None if fix is None or fix.altitude_m is None else round(fix.altitude_m, 2)
