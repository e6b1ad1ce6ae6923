"""build_pipeline(config) -> Pipeline; Pipeline.run(inputs) -> summary. Reads top to bottom:

1. expand inputs into sources; skip those already committed with the same content and config;
2. decode each source in a Ray task (at most ``workers`` at once) that streams windows;
3. a bounded queue feeds windows from all sources to ONE backbone actor in batches;
4. when a source's last window is back, link its speakers and commit its folder atomically.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import queue
import shutil
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

from onepass.model.records import WindowResult
from onepass.model.speakers import assign_speakers, label_segments

from .config import RunConfig
from .sources import Source, _safe_id, content_fingerprint, expand_inputs, stdin_fifo
from .writers import commit_source, read_committed

__all__ = ["build_pipeline", "Pipeline", "RunSummary"]

MAX_FRAMES_IN_POOL = 16  # per source: decoded frames waiting for (or in) the patchify pool
FRAMES_PER_CALL = 8  # files: frames patchified per pool call (live streams: one, at once)


@dataclass
class SourceState:
    source: Source
    info: dict = field(default_factory=dict)
    windows_sent: int = 0
    results: list[WindowResult] = field(default_factory=list)
    decode_done: bool = False
    error: str | None = None
    end_stats: dict = field(default_factory=dict)
    live_windows: int = 0
    decoded_at: dict = field(default_factory=dict)  # live: window start ms -> [time each frame left decode]
    online: object = None  # live: OnlineSpeakers


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


def build_pipeline(cfg: RunConfig) -> Pipeline:
    return Pipeline(cfg)


class Pipeline:
    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.config_fp = cfg.fingerprint()
        self._progress: Progress | None = None
        self._stopping = threading.Event()  # Ctrl-C: drive threads wind down

    # -- 1. sources ------------------------------------------------------------------------------
    def plan(self, inputs: list[str]) -> tuple[list[Source], list[Source], list[tuple[str, str]]]:
        sources, problems = expand_inputs(inputs)
        todo, skip = [], []
        for s in sources:
            row = None if (self.cfg.force or s.is_stream) else read_committed(self.cfg.output, s.id)
            if row and row["status"] == "ok" and row["config_fingerprint"] == self.config_fp \
                    and row["content_fingerprint"] == content_fingerprint(s.location):
                skip.append(s)
            else:
                todo.append(s)
        return todo, skip, problems

    def run(self, inputs: list[str], progress: Progress | None = None) -> RunSummary:
        if not self.cfg.address:
            from .ray_env import local_ray_env

            local_ray_env()
        import ray

        from .ray_stages import SIGTERM_RECEIVED, OperatorPools, decode_source, on_this_node, start_backbones, start_ray

        todo, skip, problems = self.plan(inputs)
        summary = RunSummary(skipped=[s.id for s in skip])
        progress = self._progress = progress or Progress()
        progress.start(len(todo) + len(problems))
        for stale in Path(self.cfg.output).glob("sources/.*.[to][ml][pd]"):  # .tmp / .old left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        for item, reason in problems:  # an input that names nothing still gets its error row
            st = SourceState(Source(id=_safe_id(item), location=item), error=reason)
            self._commit(st, summary)
        if not todo:
            return summary
        start_ray(self.cfg.address)
        pools = OperatorPools(self.cfg)  # first: the first frames wait for them, the backbone has a queue
        backbones = start_backbones(self.cfg)
        backbone = backbones[0]  # live streams keep their KV caches on the first one
        feed: queue.Queue = queue.Queue(maxsize=max(2, 2 * self.cfg.batch_windows))  # backpressure
        states = {s.id: SourceState(s) for s in todo}
        slots = threading.Semaphore(self.cfg.workers)

        # -- 2. decode: one thread per source drives its Ray generator task ----------------------
        stopping = self._stopping
        stopping.clear()
        gens: dict = {}

        def put(item) -> None:
            while not stopping.is_set():
                try:
                    return feed.put(item, timeout=0.2)
                except queue.Full:
                    continue

        def drive(state: SourceState):
            with slots:
                started = time.monotonic()
                attempts = 1 if state.source.is_stream else 2  # a file is retried once if its worker dies
                source, options = state.source, {}
                if source.location == "pipe:0":  # stdin: handed over through a local named pipe
                    source, options = dataclasses.replace(source, location=stdin_fifo()), on_this_node()
                for attempt in range(attempts):
                    if stopping.is_set():
                        return
                    gen = gens[state.source.id] = decode_source.options(**options).remote(source, self.cfg)
                    try:
                        self._follow(gen, state, pools, put, started)
                        break
                    except TimeoutError as exc:
                        ray.cancel(gen, force=True)
                        put(("error", state.source.id, str(exc)))
                        break
                    except Exception as exc:  # noqa: BLE001 - the worker died (e.g. a crash inside FFmpeg)
                        if stopping.is_set():
                            return
                        if attempt + 1 < attempts:
                            put(("reset", state.source.id, None))  # start the source over, cleanly
                        else:
                            put(("error", state.source.id, f"decode worker failed: {type(exc).__name__}: {exc}"))
                put(("done", state.source.id, None))

        threads = [threading.Thread(target=drive, args=(st,), daemon=True) for st in states.values()]
        for t in threads:
            t.start()

        # -- 3. batch windows from all sources into the backbone ---------------------------------
        pending: list = []  # (WindowSpec, [refs of its patches and audio frames])
        open_sources = set(states)
        try:
            while open_sources:
                try:
                    kind, sid, payload = feed.get(timeout=0.2 if pending else None)
                except queue.Empty:
                    kind = None
                if kind is not None:
                    st = states[sid]
                    if kind == "info":
                        st.info = payload
                        progress.source(sid, st.source.location, payload.get("duration_ms"), self.cfg.window_s)
                    elif kind == "frame":  # live: straight into the backbone's cache
                        start_ms, frame_ms, patches, decoded_at = payload
                        backbone.stream_frame.remote(sid, start_ms, frame_ms, patches, st.info.get("audio_codec") is not None)
                        st.decoded_at.setdefault(start_ms, []).append(decoded_at)
                    elif kind == "window" and st.source.is_stream:
                        spec, refs = payload
                        self._commit_live_window(st, ray.get(backbone.stream_window.remote(spec, *refs)), summary)
                        progress.window(sid)
                    elif kind == "window":
                        pending.append(payload)
                        st.windows_sent += 1
                    elif kind == "end":
                        st.end_stats = payload
                    elif kind == "error":
                        st.error = payload
                    elif kind == "reset":  # its decode worker died: forget this source's partial work
                        pending = [w for w in pending if w[0].source_id != sid]
                        st.results.clear()
                        st.windows_sent = 0
                    elif kind == "done":
                        st.decode_done = True
                if pending and (kind is None or len(pending) >= self.cfg.batch_windows or kind == "done"):
                    self._analyse(backbones, pending, states)
                    for spec, _ in pending:
                        progress.window(spec.source_id)
                    pending = []
                # -- 4. commit finished sources -----------------------------------------------------
                for sid in list(open_sources):
                    st = states[sid]
                    if st.decode_done and not pending and len(st.results) >= st.windows_sent:
                        self._commit(st, summary)
                        open_sources.discard(sid)
        except KeyboardInterrupt:
            # Ctrl-C (or SIGTERM, raised as one): a live stream's committed windows are its result; its row says it was stopped.
            # Files not yet committed stay uncommitted (a rerun does them); nothing written is touched.
            for sid in open_sources:
                st = states[sid]
                if st.source.is_stream and st.info:
                    # count the window folders on disk: Ctrl-C may land between a window's commit and its count
                    st.live_windows = sum(1 for p in (Path(self.cfg.output) / "sources").glob(f"{sid}~w*") if p.is_dir())
                    commit_source(self.cfg.output, sid, {"sources": [self._source_row(st, "stopped")]})
                    summary.stopped.append(sid)
            summary.interrupted = True
            summary.terminated = SIGTERM_RECEIVED.is_set()
            # stop the decode tasks and let every drive thread return before the interpreter exits
            # (a thread left inside Ray's generator at exit can crash the process)
            stopping.set()
            for gen in list(gens.values()):
                try:
                    ray.cancel(gen, force=True)
                except Exception:  # noqa: BLE001 - already finished
                    pass
            deadline = time.monotonic() + 10
            while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
                while not feed.empty():
                    feed.get_nowait()
                for t in threads:
                    t.join(timeout=0.1)
            return summary
        for t in threads:
            t.join(timeout=5)
        summary.throughput = ray.get(backbone.throughput.remote())
        return summary

    def _follow(self, gen, st: SourceState, pools, put, started: float) -> None:
        """Read one decode generator: headers are fetched, frames and audio are not - their refs go
        to the operator pools, and the pools' result refs travel on to the backbone with the
        window's spec."""
        import ray

        sid, live = st.source.id, st.source.is_stream
        width = self.cfg.window_s * 1000
        patches: dict[int, list] = defaultdict(list)  # window -> refs of lists of Patches, in frame order
        frames: list = []  # refs of frames not yet sent to the pool, all of window frames_k
        frames_k = -1
        audio: dict[int, object] = {}
        in_pool: deque = deque()  # (patchify call, frames): calls not yet known finished bound the frames in memory

        def submit(refs: list):
            p = pools.patchify(refs)
            in_pool.append((p, len(refs)))
            while sum(n for _, n in in_pool) > MAX_FRAMES_IN_POOL:
                ray.wait([in_pool.popleft()[0]], fetch_local=False)
            return p

        def flush() -> None:
            if frames:
                patches[frames_k].append(submit(frames))
                frames.clear()

        items = iter(gen)
        for ref in items:
            if self._stopping.is_set():
                return
            head = ray.get(ref)  # a small header; the frame or samples after it are never fetched here
            kind = head[0]
            if kind == "frame":
                _, k, frame_ms, decoded_at = head
                frame = next(items)
                if live:  # at once, one by one: the backbone prefills each frame as it comes
                    put(("frame", sid, (k * width, frame_ms, submit([frame]), decoded_at)))
                else:  # a new window's first frame can come before the last window's spec
                    if k != frames_k:
                        flush()
                        frames_k = k
                    frames.append(frame)
                    if len(frames) == FRAMES_PER_CALL:
                        flush()
            elif kind == "audio":
                audio[head[1]] = pools.frame_audio(next(items))
            elif kind == "window":
                spec = head[1]
                if frames_k == spec.index:
                    flush()
                refs = patches.pop(spec.index, []) + ([audio.pop(spec.index)] if spec.index in audio else [])
                put(("window", sid, (spec, refs)))
            else:  # info, end, error
                put((kind, sid, head[1]))
                if kind in ("end", "error"):
                    return
            if not live and time.monotonic() - started > self.cfg.source_timeout_s:
                raise TimeoutError(f"timed out after {self.cfg.source_timeout_s:g} s")
        if not self._stopping.is_set():  # the stream stopped without its last word: the worker was lost
            raise RuntimeError("the decode stream ended before the source did")

    def _analyse(self, backbones, windows, states) -> None:
        """One batch per backbone actor (one per GPU), run side by side. The arrays go as top-level
        ObjectRef arguments: Ray hands the actor the pools' results straight from the object store."""
        import ray

        n = len(backbones)
        calls = []
        for i, b in enumerate(backbones):
            part = windows[i::n]
            if part:
                calls.append(b.analyse.remote([spec for spec, _ in part], *[r for _, refs in part for r in refs]))
        for results in ray.get(calls):
            for r in results:
                states[r.source_id].results.append(r)

    def _rows(self, sid: str, results: list[WindowResult], turns) -> dict[str, list[dict]]:
        rows: dict[str, list[dict]] = defaultdict(list)
        for res in results:
            for c in res.captions:
                rows["captions"].append(dict(source_id=sid, start_ms=c.span.start_ms, end_ms=c.span.end_ms, frame_ms=c.frame_ms, text=c.text))
            for s in label_segments(list(res.segments), turns):
                rows["transcripts"].append(dict(source_id=sid, start_ms=s.span.start_ms, end_ms=s.span.end_ms, speaker=s.speaker, text=s.text))
            for a in res.answers:
                rows["answers"].append(dict(source_id=sid, start_ms=a.span.start_ms, end_ms=a.span.end_ms, question=a.question, text=a.text))
        for t in turns:
            rows["speakers"].append(dict(source_id=sid, start_ms=t.span.start_ms, end_ms=t.span.end_ms, speaker=t.speaker))
        return rows

    def _commit_live_window(self, st: SourceState, res: WindowResult, summary: RunSummary) -> None:
        """A live window's rows in a part folder of their own (``<id>~wNNNNNN``), then the source
        row (status ``live``) refreshed: readers see whole windows as they are committed."""
        import time

        from onepass.model.speakers import OnlineSpeakers

        if st.online is None:
            st.online = OnlineSpeakers()
        turns = st.online.add(list(res.speech)) if self.cfg.task_set.diarization else []
        k = res.span.start_ms // (self.cfg.window_s * 1000)
        commit_source(self.cfg.output, f"{st.source.id}~w{k:06d}", self._rows(st.source.id, [res], turns))
        now = time.time()
        summary.live_latency_s += [now - t for t in st.decoded_at.pop(res.span.start_ms, [])]
        st.live_windows += 1
        commit_source(self.cfg.output, st.source.id, {"sources": [self._source_row(st, "live")]})

    def _source_row(self, st: SourceState, status: str, windows: int | None = None) -> dict:
        info, cfg = st.info, self.cfg
        row = dict(
            source_id=st.source.id, path=st.source.location, size_bytes=info.get("size_bytes"), duration_ms=info.get("duration_ms"),
            start_offset_ms=info.get("start_offset_ms"), container=info.get("container"), video_codec=info.get("video_codec"),
            audio_codec=info.get("audio_codec"), width=info.get("width"), height=info.get("height"), fps=info.get("fps"),
            sample_rate_hz=info.get("sample_rate_hz"), channels=info.get("channels"),
            status=status, error=st.error, windows=windows if windows is not None else st.live_windows,
            corrupt_packets=st.end_stats.get("corrupt_packets", 0),
            content_fingerprint=content_fingerprint(st.source.location) if not st.source.is_stream else None,
            config_fingerprint=self.config_fp, model=str(cfg.model or "default"),
            processed_at=dt.datetime.now(dt.timezone.utc).replace(tzinfo=None),
        )
        return row

    def _commit(self, st: SourceState, summary: RunSummary) -> None:
        """A source's folder, atomically: all its rows (files) or its final source row (live)."""
        sid, cfg = st.source.id, self.cfg
        results = sorted(st.results, key=lambda r: r.span)
        rows: dict[str, list[dict]] = {}
        if st.error is None and not st.source.is_stream:
            turns = assign_speakers([r for res in results for r in res.speech], num_speakers=cfg.num_speakers) \
                if cfg.task_set.diarization else []
            rows = self._rows(sid, results, turns)
        windows = st.live_windows if st.source.is_stream else len(results)
        broke_off = None if st.error or st.source.is_stream else _broke_off(st)
        if broke_off:
            st.error = broke_off
        rows["sources"] = [self._source_row(st, "partial" if broke_off else "error" if st.error else "ok", windows)]
        commit_source(cfg.output, sid, rows)
        if broke_off:
            summary.partial.append((st.source.location, broke_off))
        elif st.error:
            summary.failed.append((st.source.location, st.error))
        else:
            summary.ok.append(sid)
        if self._progress is not None:
            self._progress.done(sid, st.error)


def _broke_off(st: SourceState) -> str | None:
    """Why a decoded file is not whole: its demuxer stopped with an error, or its windows end well
    before the duration its header states (a recording cut short). None when it is whole."""
    errors = list(st.end_stats.get("errors") or [])
    stated, reached = st.info.get("duration_ms"), st.end_stats.get("decoded_ms")
    if stated and reached is not None and stated - reached > max(2000, stated // 20):
        errors.append(f"media ends at {reached / 1000:.1f} s of the {stated / 1000:.1f} s its header states (file cut short?)")
    return "; ".join(errors) or None
