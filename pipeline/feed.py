"""Decode -> feed: one driver thread per source follows its decode task (at most ``workers`` at
once) and puts typed messages (pipeline/messages.py) on one bounded queue, which the driver's
loop reads. A file whose decode worker dies is decoded again once, from the start."""

from __future__ import annotations

import dataclasses
import queue
import threading
import time

from .config import RunConfig
from .messages import Closed, Failed, Fed, Finished, Opened, Restart
from .ray_stages import DecodeFollower, cancel, decode_threads, plan_decode, start_decode
from .sources import Source

__all__ = ["Feed"]


MAX_ATTEMPTS = 3  # decodes of one file: the first, and redos after a lost worker, node or input


class _Stop:
    """Whether one attempt's thread should stop: the run stops, or the source was started over."""

    def __init__(self, feed: Feed, source_id: str, attempt: int):
        self.feed, self.source_id, self.attempt = feed, source_id, attempt

    def is_set(self) -> bool:
        return self.feed.stopping.is_set() or self.feed.current.get(self.source_id) != self.attempt


class Feed:
    def __init__(self, cfg: RunConfig, pools, sources: list[Source]):
        self.cfg, self.pools = cfg, pools
        self.queue: queue.Queue = queue.Queue(maxsize=max(2, 2 * cfg.batch_windows))  # backpressure
        self.stopping = threading.Event()
        self.slots = threading.Semaphore(cfg.workers)
        self.tasks: dict[str, object] = {}
        self.current: dict[str, int] = {s.id: 0 for s in sources}  # each source's live attempt
        self.threads: list[threading.Thread] = []
        for s in sources:
            self._start(s, 0)

    def _start(self, source: Source, attempt: int) -> None:
        t = threading.Thread(target=self._drive, args=(source, attempt), daemon=True, name=f"decode {source.id} #{attempt}")
        self.threads.append(t)
        t.start()

    def redo(self, source: Source, attempt: int) -> bool:
        """Decode ``source`` again from the start as ``attempt`` (its results were lost with a
        node); False when it has had its attempts."""
        if attempt >= MAX_ATTEMPTS:
            return False
        self.current[source.id] = attempt
        old = self.tasks.get(source.id)
        if old is not None:
            cancel(old)
        self._start(source, attempt)
        return True

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

    def _drive(self, source: Source, first: int) -> None:
        cfg = self.cfg
        attempt = first

        def put(message) -> None:
            if self.current.get(source.id) == attempt or isinstance(message, Restart):
                self._put(Fed(source.id, message, attempt))

        with self.slots:
            deadline = None if source.is_stream else time.monotonic() + cfg.source_timeout_s
            last = first if source.is_stream else MAX_ATTEMPTS - 1  # a file is decoded again if its worker dies
            spans = plan_decode(source, cfg)
            while True:
                stop = _Stop(self, source.id, attempt)
                if stop.is_set():
                    return
                threads = decode_threads(len(spans))
                tasks = self.tasks[source.id] = [start_decode(source, cfg, span, threads) for span in spans]
                try:
                    if len(tasks) == 1:
                        DecodeFollower(self.pools, put, cfg.window_s * 1000, source.is_stream, attempt).follow(tasks[0], stop, deadline)
                    else:
                        _Segments(self, tasks, put, attempt).follow(stop, deadline)
                    break
                except TimeoutError:
                    cancel(tasks)
                    put(Failed(f"timed out after {cfg.source_timeout_s:g} s"))
                    break
                except Exception as exc:  # noqa: BLE001 - the worker died (e.g. a crash inside FFmpeg)
                    if stop.is_set():
                        return
                    if attempt < last:
                        attempt += 1
                        self.current[source.id] = attempt
                        put(Restart(attempt))  # start the source over, cleanly
                    else:
                        put(Failed(f"decode worker failed: {type(exc).__name__}: {exc}"))
                        break
            put(Closed())

    def join(self, timeout: float) -> None:
        for t in list(self.threads):
            t.join(timeout=timeout)

    def stop(self) -> None:
        """Stop the decode tasks and let every thread return before the interpreter exits (a
        thread left inside Ray's generator at exit can crash the process)."""
        self.stopping.set()
        for tasks in list(self.tasks.values()):
            cancel(tasks)
        deadline = time.monotonic() + 10
        while any(t.is_alive() for t in list(self.threads)) and time.monotonic() < deadline:
            while not self.queue.empty():
                self.queue.get_nowait()
            for t in list(self.threads):
                t.join(timeout=0.1)


class _Segments:
    """The decode tasks of one file's segments, followed side by side (a thread each), seen by
    the driver as one decode: the first segment's Opened; one Finished when all have finished;
    the first Failed, after which the others stop. A segment whose worker dies raises here, and
    the whole file is decoded again."""

    def __init__(self, feed: Feed, tasks: list, put, attempt: int):
        self.feed, self.tasks, self.put, self.attempt = feed, tasks, put, attempt
        self.lock = threading.Lock()
        self.finished: list[Finished] = []
        self.halt = threading.Event()  # a segment failed, or its worker died: the others stop
        self.gave_up = False  # a segment's Failed went on the feed: the file is done with
        self.errors: list[BaseException] = []

    def follow(self, stop: _Stop, deadline: float | None) -> None:
        either = _Either(stop, self.halt)
        threads = [threading.Thread(target=self._one, args=(i, task, either, deadline), daemon=True, name=f"segment {i}")
                   for i, task in enumerate(self.tasks)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        cancel(self.tasks)
        if self.errors and not self.gave_up and not stop.is_set():
            raise self.errors[0]

    def _one(self, i: int, task, stop, deadline: float | None) -> None:
        def put(message) -> None:
            with self.lock:
                if isinstance(message, Opened):
                    if i:
                        return
                    message = dataclasses.replace(message, segments=len(self.tasks))
                if isinstance(message, Finished):
                    self.finished.append(message)
                    if len(self.finished) < len(self.tasks):
                        return
                    f = self.finished
                    message = Finished(sum(m.corrupt_packets for m in f), tuple(e for m in f for e in m.errors), max(m.decoded_ms for m in f))
                elif isinstance(message, Failed):
                    if self.gave_up:
                        return
                    self.gave_up = True
                    self.halt.set()
                self.put(message)

        cfg = self.feed.cfg
        try:
            DecodeFollower(self.feed.pools, put, cfg.window_s * 1000, False, self.attempt).follow(task, stop, deadline)
        except BaseException as exc:  # noqa: BLE001 - raised in follow() by the thread that waits for all
            with self.lock:
                self.errors.append(exc)
            self.halt.set()


class _Either:
    def __init__(self, *events):
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)
