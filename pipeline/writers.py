"""Results on disk: one folder per source, committed atomically, one glob per table.

    OUT/sources/<source_id>/source.parquet        1 row  (id, path, size, duration_ms, codecs, fps, status, error, ...)
    OUT/sources/<source_id>/captions.parquet      (source_id, start_ms, end_ms, frame_ms, text, confidence, latitude, longitude, altitude_m)
    OUT/sources/<source_id>/transcripts.parquet   (source_id, start_ms, end_ms, speaker, text, confidence, latitude, longitude, altitude_m)
    OUT/sources/<source_id>/speakers.parquet      (source_id, start_ms, end_ms, speaker)
    OUT/sources/<source_id>/answers.parquet       (source_id, start_ms, end_ms, question, text, confidence, supported, latitude, longitude, altitude_m)

A source's folder is written under a temporary name beside its target and renamed into place,
so a reader sees all of a source's rows or none; every table file exists (maybe empty) so
``read_parquet('OUT/sources/*/captions.parquet')`` always works. Subtitle writers (SRT, WebVTT,
RTTM) share one small interface: ``extension`` and ``write(rows, file)``.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["SCHEMAS", "TABLES", "source_row", "result_rows", "commit_source", "read_committed", "connect", "WRITERS", "is_flagged"]

POSITION = [("latitude", pa.float64()), ("longitude", pa.float64()), ("altitude_m", pa.float64())]
SCHEMAS: dict[str, pa.Schema] = {
    "sources": pa.schema([
        ("source_id", pa.string()), ("path", pa.string()), ("size_bytes", pa.int64()),
        ("duration_ms", pa.int64()), ("start_offset_ms", pa.int64()), ("container", pa.string()),
        ("video_codec", pa.string()), ("audio_codec", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
        ("fps", pa.float64()), ("sample_rate_hz", pa.int32()), ("channels", pa.int32()),
        ("status", pa.string()), ("error", pa.string()), ("windows", pa.int32()),
        ("corrupt_packets", pa.int64()), ("content_fingerprint", pa.string()), ("config_fingerprint", pa.string()),
        ("model", pa.string()), ("processed_at", pa.timestamp("ms")),  # UTC (naive: readers need no tz database)
        ("decode_node", pa.string()),  # the Ray node id that decoded the source (its first segment's)
        ("decode_segments", pa.int32()),  # decode tasks that cut its windows side by side (1: one pass)
        ("telemetry", pa.string()),  # the telemetry sidecar its positions came from (pipeline/telemetry.py), or null
        ("telemetry_note", pa.string()),  # what was wrong with that sidecar (ignored, lines skipped, gaps), or null
    ]),
    # confidence: mean token log-probability of the generated text a row came from (Whisper's
    # avg_logprob; 0 is certain, lower is less sure); null where no text was generated
    # latitude, longitude (WGS84 degrees), altitude_m: where the row starts, from a telemetry
    # sidecar (pipeline/telemetry.py); null without one, in a gap of the track or outside it
    "captions": pa.schema([("source_id", pa.string()), ("start_ms", pa.int64()), ("end_ms", pa.int64()),
                           ("frame_ms", pa.int64()), ("text", pa.string()), ("confidence", pa.float64()), *POSITION]),
    "transcripts": pa.schema([("source_id", pa.string()), ("start_ms", pa.int64()), ("end_ms", pa.int64()),
                              ("speaker", pa.string()), ("text", pa.string()), ("confidence", pa.float64()), *POSITION]),
    "speakers": pa.schema([("source_id", pa.string()), ("start_ms", pa.int64()), ("end_ms", pa.int64()),
                           ("speaker", pa.string())]),
    # supported: false where the checkpoint does not answer the question (text "[unsupported question]")
    "answers": pa.schema([("source_id", pa.string()), ("start_ms", pa.int64()), ("end_ms", pa.int64()),
                          ("question", pa.string()), ("text", pa.string()), ("confidence", pa.float64()),
                          ("supported", pa.bool_()), *POSITION]),
}
TABLES = tuple(SCHEMAS)
FILE_OF = {"sources": "source.parquet", **{t: f"{t}.parquet" for t in TABLES if t != "sources"}}


def source_row(source_id: str, path: str, info, *, status: str, error: str | None, windows: int,
               corrupt_packets: int = 0, content_fingerprint: str | None = None, config_fingerprint: str,
               model: str, decode_node: str | None = None, decode_segments: int | None = None,
               telemetry: str | None = None, telemetry_note: str | None = None) -> dict:
    """The one mapping from a source's header (operators.decode.SourceInfo, or None when it never
    opened) and its outcome to its ``sources`` row."""
    return dict(
        source_id=source_id, path=path, size_bytes=getattr(info, "size_bytes", None),
        duration_ms=getattr(info, "duration_ms", None), start_offset_ms=getattr(info, "start_ms", None),
        container=getattr(info, "container", None), video_codec=getattr(info, "video_codec", None),
        audio_codec=getattr(info, "audio_codec", None), width=getattr(info, "width", None), height=getattr(info, "height", None),
        fps=getattr(info, "avg_fps", None), sample_rate_hz=getattr(info, "sample_rate_hz", None), channels=getattr(info, "channels", None),
        status=status, error=error, windows=windows, corrupt_packets=corrupt_packets,
        content_fingerprint=content_fingerprint, config_fingerprint=config_fingerprint, model=model,
        processed_at=dt.datetime.now(dt.timezone.utc).replace(tzinfo=None), decode_node=decode_node,
        decode_segments=decode_segments, telemetry=telemetry, telemetry_note=telemetry_note,
    )


def result_rows(source_id: str, results, turns) -> dict[str, list[dict]]:
    """Rows of the captions, transcripts, answers and speakers tables from a source's
    WindowResults and its speaker turns (each transcript segment takes its turn's speaker)."""
    from onepass.model.speakers import label_segments

    rows: dict[str, list[dict]] = defaultdict(list)
    for res in results:
        for c in res.captions:
            rows["captions"].append(dict(source_id=source_id, start_ms=c.span.start_ms, end_ms=c.span.end_ms, frame_ms=c.frame_ms, text=c.text,
                                         confidence=c.confidence))
        for s in label_segments(list(res.segments), turns):
            rows["transcripts"].append(dict(source_id=source_id, start_ms=s.span.start_ms, end_ms=s.span.end_ms, speaker=s.speaker, text=s.text,
                                            confidence=s.confidence))
        for a in res.answers:
            rows["answers"].append(dict(source_id=source_id, start_ms=a.span.start_ms, end_ms=a.span.end_ms, question=a.question, text=a.text,
                                        confidence=a.confidence, supported=a.supported))
    for t in turns:
        rows["speakers"].append(dict(source_id=source_id, start_ms=t.span.start_ms, end_ms=t.span.end_ms, speaker=t.speaker))
    return rows


def table_glob(out: Path, table: str) -> str:
    return str(Path(out) / "sources" / "*" / FILE_OF[table])


_NOT_FLAGGED = {"", "none", "no", "nothing", "n/a", "na", "no defects", "nothing visible", "none visible"}


def is_flagged(answer: str | None) -> bool:
    """An answer that says something (not empty, not 'none'/'no'..., not a marker of media
    outside the model's domain, not an unsupported question): a finding, a moment to look at.
    The one rule: the report, answers.csv and the ``findings`` view all use it."""
    from onepass.model.tasks import UNSUPPORTED, is_marker

    text = (answer or "").strip().lower().strip(".!")
    return text not in _NOT_FLAGGED and text != UNSUPPORTED and not is_marker(text)


_DUCK_TYPES = {pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.int32(): "INTEGER", pa.float64(): "DOUBLE",
               pa.bool_(): "BOOLEAN", pa.timestamp("ms"): "TIMESTAMP"}

# Every flagged answer with its moment: the kept frame shown when it starts (the last at or before
# its start, else its first), where it was, and what was said while it lasted (the transcript lines
# overlapping it, with their speakers). One row per finding; query it like a table.
FINDINGS_SQL = """
CREATE VIEW findings AS
SELECT a.source_id, s.path, a.start_ms, a.end_ms, a.question, a.text AS finding, a.confidence,
       coalesce((SELECT max(c.frame_ms) FROM captions c WHERE c.source_id = a.source_id AND c.frame_ms <= a.start_ms),
                (SELECT min(c.frame_ms) FROM captions c WHERE c.source_id = a.source_id AND c.frame_ms < a.end_ms)) AS frame_ms,
       (SELECT string_agg(DISTINCT t.speaker, ', ' ORDER BY t.speaker) FROM transcripts t
         WHERE t.source_id = a.source_id AND t.start_ms < a.end_ms AND t.end_ms > a.start_ms) AS speaker,
       (SELECT string_agg(coalesce(t.speaker || ': ', '') || t.text, ' / ' ORDER BY t.start_ms) FROM transcripts t
         WHERE t.source_id = a.source_id AND t.start_ms < a.end_ms AND t.end_ms > a.start_ms) AS remark,
       a.latitude, a.longitude, a.altitude_m
FROM answers a JOIN sources s USING (source_id)
WHERE onepass_is_flagged(a.text)
"""


def connect(out: Path):
    """A DuckDB connection with one view per table over OUT (every column of today's schema, null
    where older files lack it) and the ``findings`` view, confined to OUT: it reads nothing
    outside the output folder (no read_text('/etc/...')) and writes nowhere; the settings are
    locked so that SQL cannot lift them."""
    import duckdb

    con = duckdb.connect(":memory:")
    for table in TABLES:
        glob = table_glob(out, table).replace("'", "''")
        source = f"read_parquet('{glob}', union_by_name=true)"
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM {source}")
        have = {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
        missing = [f for f in SCHEMAS[table] if f.name not in have]
        if missing:  # results written before a column existed
            extra = ", ".join(f"NULL::{_DUCK_TYPES[f.type]} AS {f.name}" for f in missing)
            con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT *, {extra} FROM {source}")
    con.create_function("onepass_is_flagged", is_flagged, ["VARCHAR"], "BOOLEAN", null_handling="special")
    con.execute(FINDINGS_SQL)
    folder = str(Path(out).resolve()).replace("'", "''")
    con.execute(f"SET allowed_directories = ['{folder}']")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def commit_source(out: Path, source_id: str, rows: dict[str, list[dict]]) -> Path:
    """Write every table of one source beside its final folder, then rename it into place."""
    if "/" in source_id or source_id in ("", ".", "..") or source_id.startswith("."):
        raise ValueError(f"unsafe source id {source_id!r}")
    root = Path(out) / "sources"
    root.mkdir(parents=True, exist_ok=True)
    final = root / source_id
    tmp = root / f".{source_id}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        for table, schema in SCHEMAS.items():
            pq.write_table(pa.Table.from_pylist(rows.get(table, []), schema=schema), tmp / FILE_OF[table])
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():  # --force or a config change: swap the old folder out
            old = root / f".{source_id}.{uuid.uuid4().hex[:8]}.old"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_committed(out: Path, source_id: str) -> dict | None:
    """The committed `sources` row of a source, or None."""
    f = Path(out) / "sources" / source_id / FILE_OF["sources"]
    if not f.is_file():
        return None
    rows = pq.read_table(f).to_pylist()
    return rows[0] if rows else None


# -- subtitle / RTTM writers --------------------------------------------------------------------
def _clock(ms: int, sep: str) -> str:
    h, rem = divmod(int(ms), 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


class SubtitleWriter:
    extension = ""

    def write(self, rows: list[dict], file) -> None:
        raise NotImplementedError


class SRTWriter(SubtitleWriter):
    extension = "srt"

    def write(self, rows, file):
        for i, r in enumerate(rows, 1):
            who = f"[{r['speaker']}] " if r.get("speaker") else ""
            file.write(f"{i}\n{_clock(r['start_ms'], ',')} --> {_clock(r['end_ms'], ',')}\n{who}{r['text']}\n\n")


class VTTWriter(SubtitleWriter):
    extension = "vtt"

    def write(self, rows, file):
        file.write("WEBVTT\n\n")
        for r in rows:
            text = r["text"].replace("<", "&lt;").replace(">", "&gt;")
            voice = f"<v {r['speaker']}>" if r.get("speaker") else ""
            file.write(f"{_clock(r['start_ms'], '.')} --> {_clock(r['end_ms'], '.')}\n{voice}{text}\n\n")


class RTTMWriter(SubtitleWriter):
    extension = "rttm"

    def write(self, rows, file):
        for r in rows:
            dur = (r["end_ms"] - r["start_ms"]) / 1000
            file.write(f"SPEAKER {r['source_id']} 1 {r['start_ms'] / 1000:.3f} {dur:.3f} <NA> <NA> {r['speaker']} <NA> <NA>\n")


class GeoJSONWriter(SubtitleWriter):
    """Every row with a position as a GeoJSON point (RFC 7946: [longitude, latitude, altitude]),
    with its table, time, text, speaker or question; the caption rows' positions in time order
    also make the source's track (a LineString). Rows carry a ``table`` key."""

    extension = "geojson"

    def write(self, rows, file):
        import json

        def coords(r):
            c = [r["longitude"], r["latitude"]]
            return c + [r["altitude_m"]] if r.get("altitude_m") is not None else c

        placed = [r for r in rows if r.get("latitude") is not None and r.get("longitude") is not None]
        features = []
        track = [coords(r) for r in sorted((r for r in placed if r["table"] == "captions"), key=lambda r: r["start_ms"])]
        if len(track) >= 2:
            features.append({"type": "Feature", "geometry": {"type": "LineString", "coordinates": track},
                             "properties": {"kind": "track", "source_id": placed[0]["source_id"]}})
        for r in sorted(placed, key=lambda r: (r["start_ms"], r["table"])):
            props = {"kind": r["table"], "source_id": r["source_id"], "start_ms": r["start_ms"], "end_ms": r["end_ms"],
                     "time": _clock(r["start_ms"], "."), "text": r.get("text")}
            if r["table"] == "transcripts":
                props["speaker"] = r.get("speaker")
            if r["table"] == "answers":
                props["question"], props["flagged"] = r.get("question"), is_flagged(r.get("text"))
            if r["table"] == "captions":
                props["frame_ms"] = r.get("frame_ms")
            features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": coords(r)}, "properties": props})
        json.dump({"type": "FeatureCollection", "features": features}, file, ensure_ascii=False, indent=1)
        file.write("\n")


WRITERS: dict[str, SubtitleWriter] = {w.extension: w for w in (SRTWriter(), VTTWriter(), RTTMWriter(), GeoJSONWriter())}
