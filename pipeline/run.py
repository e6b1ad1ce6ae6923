"""build_pipeline(config) -> Pipeline; Pipeline.run(inputs) -> summary. The data flow, by file:

1. sources.py   expand inputs into sources; skip those already committed with the same content and config;
2. feed.py      decode each source in a Ray task (ray_stages.decode_source, at most ``workers`` at
                once); its thread hands frames and audio to the operator pools and puts typed
                messages (messages.py) on one bounded feed;
3. batcher.py   windows from all sources go to the backbone actor(s) in batches, one call in flight
                while this loop goes on reading the feed and committing;
4. commit.py    when a source's last result is back, link its speakers and commit its folder
                atomically (writers.py); a live stream commits window by window.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .batcher import Batcher, LostWindows
from .commit import Committer, Progress, RunSummary, SourceState
from .config import RunConfig
from .messages import Closed, Failed, Fed, Finished, LiveFrame, Opened, Restart, WindowRefs
from .sources import Source, _safe_id, expand_inputs, source_fingerprint
from .writers import read_committed

__all__ = ["build_pipeline", "Pipeline", "RunSummary", "Progress"]


def build_pipeline(cfg: RunConfig) -> Pipeline:
    return Pipeline(cfg)


class Pipeline:
    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.config_fp = cfg.fingerprint()

    def plan(self, inputs: list[str]) -> tuple[list[Source], list[Source], list[tuple[str, str]]]:
        """(to do, already done with the same content and config, inputs that name nothing)."""
        sources, problems = expand_inputs(inputs)
        todo, skip = [], []
        for s in sources:
            row = None if (self.cfg.force or s.is_stream) else read_committed(self.cfg.output, s.id)
            if row and row["status"] == "ok" and row["config_fingerprint"] == self.config_fp \
                    and row["content_fingerprint"] == source_fingerprint(s.location, self.cfg.telemetry):
                skip.append(s)
            else:
                todo.append(s)
        return todo, skip, problems

    def run(self, inputs: list[str], progress: Progress | None = None) -> RunSummary:
        if not self.cfg.address:
            from .ray_env import local_ray_env

            local_ray_env()  # before the first `import ray`
        from .feed import Feed
        from .ray_stages import SIGTERM_RECEIVED, Backbones, OperatorPools, start_ray

        todo, skip, problems = self.plan(inputs)
        summary = RunSummary(skipped=[s.id for s in skip])
        self.progress = progress or Progress()
        self.progress.start(len(todo) + len(problems))
        self.commit = Committer(self.cfg, summary, self.progress)
        for stale in Path(self.cfg.output).glob("sources/.*.[to][ml][pd]"):  # .tmp / .old left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        for item, reason in problems:  # an input that names nothing still gets its error row
            self.commit.source(SourceState(Source(id=_safe_id(item), location=item), error=reason))
        if not todo:
            return summary
        start_ray(self.cfg.address)
        pools = OperatorPools(self.cfg)  # first: the first frames wait for them, the backbone has a queue
        self.backbones = Backbones(self.cfg)
        self.states = {s.id: SourceState(s) for s in todo}
        feed = self.feed = Feed(self.cfg, pools, todo)
        try:
            self._loop(feed, Batcher(self.backbones, self.cfg.batch_windows))
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM raised as one
            # files not yet committed stay uncommitted (a rerun does them); nothing written is touched
            for st in self.states.values():
                if st.source.id in self.open and st.source.is_stream and st.opened:
                    self.commit.stopped(st)
            summary.interrupted, summary.terminated = True, SIGTERM_RECEIVED.is_set()
            feed.stop()
            return summary
        feed.join(timeout=5)
        summary.throughput = self.backbones.throughput()
        return summary

    def _loop(self, feed, batcher: Batcher) -> None:
        self.open = set(self.states)
        while self.open:
            fed = feed.get(timeout=0.05 if batcher.busy else None)
            if fed is not None:
                self._handle(fed, self.states[fed.source_id], batcher)
            try:
                back = batcher.pump(idle=fed is None)
            except LostWindows as lost:
                back = []
                self._redo({w.spec.source_id for w in lost.windows if w.attempt == self.states[w.spec.source_id].attempt}, batcher, lost)
            for window, result in back:
                st = self.states[window.spec.source_id]
                if window.attempt == st.attempt:  # not from a decode attempt that was restarted
                    st.results.append(result)
                    self.progress.window(st.source.id)
            for sid in [s for s in self.open if self.states[s].complete and not batcher.holds(s)]:
                self.commit.source(self.states[sid])
                self.open.discard(sid)

    def _redo(self, source_ids: set[str], batcher: Batcher, lost: LostWindows) -> None:
        """Sources whose windows were lost in the backbone call start over (a new decode attempt)."""
        for sid in source_ids:
            st = self.states[sid]
            batcher.drop(sid)
            st.restart(st.attempt + 1)
            if not self.feed.redo(st.source, st.attempt):
                st.error, st.closed = f"lost its windows {st.attempt} times, the last: {lost.cause}", True

    def _handle(self, fed: Fed, st: SourceState, batcher: Batcher) -> None:
        if fed.attempt != st.attempt and not (isinstance(fed.message, Restart) and fed.message.attempt > st.attempt):
            return  # from a decode attempt that was started over
        match fed.message:
            case Opened() as m:
                st.opened, st.node, st.segments = m, m.node, m.segments
                self.progress.source(st.source.id, st.source.location, m.info.duration_ms, self.cfg.window_s)
            case LiveFrame() as m:  # straight into the backbone's cache
                self.backbones.stream_frame(st.source.id, m, st.opened.info.has_audio)
                st.decoded_at.setdefault(m.window_start_ms, []).append(m.decoded_at)
            case WindowRefs() as m if st.source.is_stream:
                self.commit.live_window(st, self.backbones.stream_window(m))
            case WindowRefs() as m:
                batcher.add(m)
                st.windows_sent += 1
            case Finished() as m:
                st.finished = m
            case Failed() as m:
                st.error, st.node = m.reason, m.node or st.node
            case Restart() as m:  # its decode worker died: forget this source's partial work
                batcher.drop(st.source.id)
                st.restart(m.attempt)
            case Closed():
                st.closed = True
