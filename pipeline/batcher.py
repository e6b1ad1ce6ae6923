"""Windows from all sources into the backbone, in batches, with one call in flight: while the
backbone analyses a batch, the driver keeps reading decode messages, fills the next batch and
commits finished sources."""

from __future__ import annotations

from .messages import WindowRefs

__all__ = ["Batcher", "LostWindows"]


class LostWindows(Exception):
    """A backbone call failed: its windows' inputs were lost (e.g. with a node that held them),
    or the backbone could not run them. Their sources must be decoded again."""

    def __init__(self, windows: list[WindowRefs], cause: BaseException):
        super().__init__(f"{len(windows)} windows lost: {type(cause).__name__}: {cause}")
        self.windows, self.cause = windows, cause


class Batcher:
    def __init__(self, backbones, batch_windows: int):
        self.backbones = backbones
        self.size = batch_windows * len(backbones.actors)  # a batch for each actor
        self.pending: list[WindowRefs] = []
        self.call = None  # the BackboneCall in flight

    def add(self, window: WindowRefs) -> None:
        self.pending.append(window)

    def drop(self, source_id: str) -> None:
        """A source starts over: its windows not yet sent are dropped (results in flight are
        dropped by attempt when they come back)."""
        self.pending = [w for w in self.pending if w.spec.source_id != source_id]

    def holds(self, source_id: str) -> bool:
        """Whether a window of ``source_id`` waits here or is in flight."""
        inflight = self.call.windows if self.call is not None else []
        return any(w.spec.source_id == source_id for w in self.pending) or \
            any(w.spec.source_id == source_id for part in inflight for w in part)

    @property
    def busy(self) -> bool:
        return bool(self.pending) or self.call is not None

    def pump(self, idle: bool = False) -> list:
        """Collect the call in flight if it is back (never waits for it), then send the next batch
        if one is full, or whatever waits when the feed is ``idle``. Returns the
        [(WindowRefs, WindowResult)] that came back."""
        back = []
        if self.call is not None and self.call.ready():
            call, self.call = self.call, None
            try:
                back = call.results()
            except Exception as exc:  # noqa: BLE001 - any failure of the call: its windows are redone
                raise LostWindows([w for part in call.windows for w in part], exc) from exc
        if self.call is None and self.pending and (idle or len(self.pending) >= self.size):
            batch, self.pending = self.pending[:self.size], self.pending[self.size:]
            self.call = self.backbones.submit(batch)
        return back
