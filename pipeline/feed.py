"""Decode -> feed: one driver thread per source follows its decode task (at most ``workers`` at
once) and puts typed messages (pipeline/messages.py) on one bounded queue, which the driver's
loop reads. A file whose decode worker dies is decoded again once, from the start."""

from __future__ import annotations

import queue
import threading
import time

from .config import RunConfig
from .messages import Closed, Failed, Fed, Restart
from .ray_stages import DecodeFollower, cancel, start_decode
from .sources import Source

__all__ = ["Feed"]


class Feed:
    def __init__(self, cfg: RunConfig, pools, sources: list[Source]):
        self.cfg, self.pools = cfg, pools
        self.queue: queue.Queue = queue.Queue(maxsize=max(2, 2 * cfg.batch_windows))  # backpressure
        self.stopping = threading.Event()
        self.slots = threading.Semaphore(cfg.workers)
        self.tasks: dict[str, object] = {}
        self.threads = [threading.Thread(target=self._drive, args=(s,), daemon=True, name=f"decode {s.id}") for s in sources]
        for t in self.threads:
            t.start()

    def get(self, timeout: float | None) -> Fed | None:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _put(self, fed: Fed) -> None:
        while not self.stopping.is_set():
            try:
                return self.queue.put(fed, timeout=0.2)
            except queue.Full:
                continue

    def _drive(self, source: Source) -> None:
        cfg = self.cfg

        def put(message) -> None:
            self._put(Fed(source.id, message))

        with self.slots:
            deadline = None if source.is_stream else time.monotonic() + cfg.source_timeout_s
            attempts = 1 if source.is_stream else 2  # a file is retried once if its worker dies
            for attempt in range(attempts):
                if self.stopping.is_set():
                    return
                task = self.tasks[source.id] = start_decode(source, cfg)
                try:
                    DecodeFollower(self.pools, put, cfg.window_s * 1000, source.is_stream, attempt).follow(task, self.stopping, deadline)
                    break
                except TimeoutError:
                    cancel(task)
                    put(Failed(f"timed out after {cfg.source_timeout_s:g} s"))
                    break
                except Exception as exc:  # noqa: BLE001 - the worker died (e.g. a crash inside FFmpeg)
                    if self.stopping.is_set():
                        return
                    if attempt + 1 < attempts:
                        put(Restart(attempt + 1))  # start the source over, cleanly
                    else:
                        put(Failed(f"decode worker failed: {type(exc).__name__}: {exc}"))
            put(Closed())

    def join(self, timeout: float) -> None:
        for t in self.threads:
            t.join(timeout=timeout)

    def stop(self) -> None:
        """Stop the decode tasks and let every thread return before the interpreter exits (a
        thread left inside Ray's generator at exit can crash the process)."""
        self.stopping.set()
        for task in list(self.tasks.values()):
            cancel(task)
        deadline = time.monotonic() + 10
        while any(t.is_alive() for t in self.threads) and time.monotonic() < deadline:
            while not self.queue.empty():
                self.queue.get_nowait()
            for t in self.threads:
                t.join(timeout=0.1)
