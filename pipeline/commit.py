"""What the driver knows of each source, and committing it: all of a source's rows in one atomic
folder (writers.commit_source), or, for a live stream, one folder per window as it comes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from onepass.model.records import WindowResult
from onepass.model.speakers import assign_speakers

from .config import RunConfig
from .messages import Finished, Opened
from .sources import Source, source_fingerprint
from .telemetry import add_positions, load_track
from .writers import commit_source, result_rows, source_row

__all__ = ["SourceState", "RunSummary", "Progress", "Committer"]


@dataclass
class SourceState:
    source: Source
    opened: Opened | None = None
    finished: Finished | None = None
    error: str | None = None
    node: str | None = None  # the Ray node that decoded (or tried to decode) it
    segments: int | None = None  # its decode tasks (1: one pass; more: a long file decoded in segments)
    attempt: int = 0  # decode attempts restarted so far; results of older attempts are dropped
    windows_sent: int = 0
    results: list[WindowResult] = field(default_factory=list)
    closed: bool = False  # its thread put its last message
    live_windows: int = 0
    decoded_at: dict = field(default_factory=dict)  # live: window start ms -> [time each frame left decode]
    online: object = None  # live: OnlineSpeakers

    def restart(self, attempt: int) -> None:
        """Forget what an earlier decode attempt delivered: the source is decoded again."""
        self.attempt, self.windows_sent, self.closed, self.finished, self.error = attempt, 0, False, None, None
        self.results.clear()

    @property
    def complete(self) -> bool:
        return self.closed and len(self.results) >= self.windows_sent


@dataclass
class RunSummary:
    ok: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    partial: list[tuple[str, str]] = field(default_factory=list)  # committed, but the file broke off (rows up to there)
    stopped: list[str] = field(default_factory=list)  # live streams ended by Ctrl-C
    interrupted: bool = False  # Ctrl-C or SIGTERM: sources not yet committed are left for a rerun
    terminated: bool = False  # it was SIGTERM
    throughput: str = ""
    live_latency_s: list[float] = field(default_factory=list)  # per live second: decoded -> rows committed
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (location, what): rows kept, something to know

    @property
    def exit_code(self) -> int:
        return 143 if self.terminated else 130 if self.interrupted else 1 if self.failed or self.partial else 0


class Progress:
    """What a run reports as it goes; the CLI draws it (tqdm), the default draws nothing."""

    def start(self, sources: int) -> None: ...

    def source(self, source_id: str, location: str, duration_ms: int | None, window_s: int) -> None: ...

    def window(self, source_id: str) -> None: ...

    def done(self, source_id: str, error: str | None) -> None: ...

    def close(self) -> None: ...


class Committer:
    def __init__(self, cfg: RunConfig, summary: RunSummary, progress: Progress):
        from onepass.model.meta import model_speakers

        self.cfg, self.summary, self.progress = cfg, summary, progress
        self.config_fp = cfg.fingerprint()
        self.speakers = model_speakers(cfg.model)  # the checkpoint's clustering settings (onepass.json)
        self.known = []
        if cfg.voices:  # enrolled once per run (cached in the output folder)
            from onepass.model.voices import enrol

            self.known = enrol(cfg.voices, Path(cfg.output) / "voices.json")

    def _row(self, st: SourceState, status: str, windows: int, sidecar=None, note: str | None = None) -> dict:
        s = st.source
        return source_row(
            s.id, s.location, st.opened.info if st.opened else None, status=status, error=st.error, windows=windows,
            corrupt_packets=st.finished.corrupt_packets if st.finished else 0,
            content_fingerprint=None if s.is_stream else source_fingerprint(s.location, self.cfg.telemetry),
            config_fingerprint=self.config_fp, model=str(self.cfg.model or "default"),
            decode_node=st.node, decode_segments=st.segments,
            telemetry=None if sidecar is None else str(sidecar), telemetry_note=note)

    def source(self, st: SourceState) -> None:
        """A source's folder, atomically: all its rows (files) or its final source row (live)."""
        sid, cfg = st.source.id, self.cfg
        results = sorted(st.results, key=lambda r: r.span)
        rows: dict[str, list[dict]] = {}
        sidecar = note = None
        if st.error is None and not st.source.is_stream:
            turns = assign_speakers([r for res in results for r in res.speech], num_speakers=cfg.num_speakers,
                                    min_speakers=cfg.min_speakers, max_speakers=cfg.max_speakers, known=self.known,
                                    **self.speakers) if cfg.task_set.diarization else []
            rows = result_rows(sid, results, turns)
            track, sidecar, note = load_track(st.source.location, cfg.telemetry)
            add_positions(rows, track)
            if note:
                self.summary.warnings.append((st.source.location, note))
        broke_off = None if st.error or st.source.is_stream else _broke_off(st)
        if broke_off:
            st.error = broke_off
        windows = st.live_windows if st.source.is_stream else len(results)
        rows["sources"] = [self._row(st, "partial" if broke_off else "error" if st.error else "ok", windows, sidecar, note)]
        commit_source(cfg.output, sid, rows)
        if broke_off:
            self.summary.partial.append((st.source.location, broke_off))
        elif st.error:
            self.summary.failed.append((st.source.location, st.error))
        else:
            self.summary.ok.append(sid)
        self.progress.done(sid, st.error)

    def live_window(self, st: SourceState, res: WindowResult) -> None:
        """A live window's rows in a part folder of their own (``<id>~wNNNNNN``), then the source
        row (status ``live``) refreshed: readers see whole windows as they are committed."""
        from onepass.model.speakers import OnlineSpeakers

        if st.online is None:
            st.online = OnlineSpeakers(**self.speakers, known=self.known)
        turns = st.online.add(list(res.speech)) if self.cfg.task_set.diarization else []
        k = res.span.start_ms // (self.cfg.window_s * 1000)
        commit_source(self.cfg.output, f"{st.source.id}~w{k:06d}", result_rows(st.source.id, [res], turns))
        now = time.time()
        self.summary.live_latency_s += [now - t for t in st.decoded_at.pop(res.span.start_ms, [])]
        st.live_windows += 1
        commit_source(self.cfg.output, st.source.id, {"sources": [self._row(st, "live", st.live_windows)]})
        self.progress.window(st.source.id)

    def stopped(self, st: SourceState) -> None:
        """Ctrl-C on a live stream: its committed windows are its result; its row says it was stopped."""
        # count the window folders on disk: Ctrl-C may land between a window's commit and its count
        st.live_windows = sum(1 for p in (Path(self.cfg.output) / "sources").glob(f"{st.source.id}~w*") if p.is_dir())
        commit_source(self.cfg.output, st.source.id, {"sources": [self._row(st, "stopped", st.live_windows)]})
        self.summary.stopped.append(st.source.id)


def _broke_off(st: SourceState) -> str | None:
    """Why a decoded file is not whole: its demuxer stopped with an error, or its windows end well
    before the duration its header states (a recording cut short). None when it is whole."""
    errors = list(st.finished.errors) if st.finished else []
    stated = st.opened.info.duration_ms if st.opened else None
    reached = st.finished.decoded_ms if st.finished else None
    refused = any("was not read" in e for e in errors)  # a stream left unread ends early by design, not cut short
    if stated and reached is not None and not refused and stated - reached > max(2000, stated // 20):
        errors.append(f"media ends at {reached / 1000:.1f} s of the {stated / 1000:.1f} s its header states (file cut short?)")
    return "; ".join(dict.fromkeys(errors)) or None  # a file's segments may each say the same
