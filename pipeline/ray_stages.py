"""The one module that imports Ray: starts it, and wraps the operators and the backbone as
remote stages. Everything it calls is plain Python that runs (and is tested) without Ray."""

from __future__ import annotations

import dataclasses
import itertools
import os
import threading
import time
import warnings
from collections import defaultdict, deque

import ray

from onepass.operators.decode import DecodeError, MediaReader, plan_segments, segment_items

from .config import RunConfig
from .messages import AudioHead, Failed, Finished, FrameHead, LiveFrame, Opened, WindowHead, WindowRefs
from .sources import Source
from .windows import CONTEXT_MS, AudioPart, FramePart, WindowSpec, cut_windows

__all__ = ["start_ray", "decode_source", "start_decode", "cancel", "DecodeFollower", "OperatorPools", "Backbones", "assemble"]

MAX_FRAMES_IN_POOL = 16  # per source: decoded frames waiting for (or in) the patchify pool
FRAMES_PER_CALL = 8  # files: frames patchified per pool call (live streams: one, at once)
WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}  # a local Ray's workers: one thread each


SIGTERM_RECEIVED = threading.Event()  # set by the handler: Ray re-raises interrupts as plain KeyboardInterrupt


def _on_sigterm(signum, frame):
    """SIGTERM (``timeout``, systemd, a batch scheduler): stop as on Ctrl-C."""
    SIGTERM_RECEIVED.set()
    raise KeyboardInterrupt("SIGTERM")


def start_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Join ``address``, or start a local Ray on 127.0.0.1 with no dashboard, no job API, no
    client server, and token authentication on (see :func:`onepass.pipeline.ray_env.local_ray_env`).
    Its servers then bind to loopback only; the token still keeps other local users out.
    Afterwards SIGTERM stops the driver as Ctrl-C does (Ray's own handler would dump a stack)."""
    if ray.is_initialized():
        return
    from ray._private import ray_constants

    if address:
        host = address.rsplit(":", 1)[0].removeprefix("ray://").strip("[]")
        local = {}
        if host in ("127.0.0.1", "localhost", "::1"):
            # a cluster whose head serves on loopback (nodes on this machine): Ray would otherwise
            # swap 127.0.0.1 for the machine's reachable IP, where nothing listens
            ray_constants.ENABLE_RAY_CLUSTER = False
            local = {"_node_ip_address": "127.0.0.1"}
        ray.init(address=address, log_to_driver=False, configure_logging=False, **local)
        _handle_sigterm()
        return
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    if not is_token_auth_enabled():  # Ray reads RAY_AUTH_MODE once, when first imported
        raise RuntimeError("Ray was imported before onepass set up its local token authentication: call "
                           "onepass.pipeline.ray_env.local_ray_env() before the first `import ray` (the onepass CLI does)")
    ray_constants.ENABLE_RAY_CLUSTER = False  # what RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 sets when read at import (Ray may be imported earlier)
    # The workers' environment: the raylet starts them with its own, which it takes from this process
    # when ray.init starts it. Set here for the call only, not as a job runtime_env: Ray cannot hand a
    # runtime_env job the workers it prestarts, so every task and actor then waited for a fresh worker
    # (the fault tests' job, 3 x 12 s clips on 2 busy cores: median 33.4 s per run with it, 27.7 s without).
    saved = {k: os.environ.get(k) for k in WORKER_ENV}
    os.environ.update(WORKER_ENV)
    try:
        ray.init(
            address="local",  # a private instance: never a cluster that `ray start` left on this machine (Ray would join it)
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            num_cpus=num_cpus,
            log_to_driver=False,
            configure_logging=False,
        )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if ray.util.get_node_ip_address() != "127.0.0.1":
        warnings.warn(f"local Ray took node address {ray.util.get_node_ip_address()}, not 127.0.0.1", stacklevel=2)
    _handle_sigterm()


def _handle_sigterm() -> None:
    import signal

    SIGTERM_RECEIVED.clear()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


# Each frame and each window's audio is yielded as an object of its own, right after a small header
# that says what it is (pipeline/messages.py). Objects a generator yields are owned by the caller
# (the driver), which reads only the headers (small: inlined in Ray's reply) and hands the parts'
# REFS to the operator pools: pixels and samples go decode -> object store -> pool actor -> object
# store -> backbone, and are never fetched to the driver, even when the decode task runs on another
# machine of a cluster. At most 16 objects (about 8 frames) wait unread per source: decode never
# runs far ahead of the driver.
@ray.remote(num_cpus=1, max_retries=0, _generator_backpressure_num_objects=16)
def decode_source(source: Source, cfg: RunConfig, segment: tuple[int, int | None] | None = None, threads: int | None = None):
    """Streams Opened; then FrameHead + FramePart, AudioHead + AudioPart and WindowHead as
    cut_windows makes them; then Finished or Failed. ``segment`` [start_ms, end_ms): only the
    windows of that span of a file (operators.decode.segment_items), exactly as one pass cuts them;
    ``threads``: FFmpeg decoder threads (segments side by side share the cores: decode_threads)."""
    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    if not source.is_stream and "://" not in source.location and not os.path.exists(source.location):
        # the driver saw the file; this node does not: inputs are read where they are decoded
        where = f"Ray node {node} ({ray.util.get_node_ip_address()})" if node else "the decoding machine"
        yield Failed(f"{source.location} does not exist on {where}: on a cluster every node must see the inputs "
                     "at the same path (a shared mount)", node)
        return
    try:
        read_timeout_s = cfg.stream_timeout_s if source.is_stream else 30.0
        with MediaReader(source.location, fps=cfg.fps, mode=cfg.decode_mode, read_timeout_s=read_timeout_s, threads=threads) as media:
            yield Opened(media.info, node)
            decoded_ms = 0  # how far the windows reach: a file cut short ends before its stated duration
            width, span, items = cfg.window_s * 1000, None, None
            context = (0, 0) if source.is_stream else CONTEXT_MS  # a live window does not wait for the next one's audio
            if segment is not None:
                span = (segment[0] // width, None if segment[1] is None else segment[1] // width)
                items = segment_items(media, *segment, audio_after_ms=context[1])
            for part in cut_windows(media, source.id, window_s=cfg.window_s, segment=span, items=items, context_ms=context):
                if isinstance(part, FramePart):
                    yield FrameHead(part.index, part.frame_ms, part.decoded_at)
                    yield part
                elif isinstance(part, AudioPart):
                    yield AudioHead(part.index)
                    yield part
                else:
                    decoded_ms = max(decoded_ms, part.span.end_ms)
                    yield WindowHead(part)
            yield Finished(media.stats.corrupt_packets, tuple(media.stats.errors), decoded_ms)
    except DecodeError as exc:
        yield Failed(exc.reason, node)
    except Exception as exc:  # noqa: BLE001 - any other failure is this source's, not the run's
        yield Failed(f"{type(exc).__name__}: {exc}", node)


def decode_threads(segments: int) -> int | None:
    """FFmpeg threads for each of ``segments`` decoders side by side: the cluster's CPUs shared out
    (one decoder with FFmpeg's own threads already fills a node; several with one thread each do it
    with less contention). None for one pass: FFmpeg's choice."""
    if segments <= 1:
        return None
    if os.environ.get("ONEPASS_DECODE_THREADS"):  # pinned by the user (benchmarks)
        return int(os.environ["ONEPASS_DECODE_THREADS"])
    return max(1, int(ray.cluster_resources().get("CPU", 1)) // segments)


def start_decode(source: Source, cfg: RunConfig, segment: tuple[int, int | None] | None = None, threads: int | None = None):
    """The decode task of ``source`` (its generator); stdin is read through a named pipe on this machine."""
    options = {}
    if source.location == "pipe:0":
        from .sources import stdin_fifo

        source, options = dataclasses.replace(source, location=stdin_fifo()), _on_this_node()
    return decode_source.options(**options).remote(source, cfg, segment, threads)


MIN_VIDEO_BYTES_PER_S = 4096  # 32 kbit/s: a file smaller than two segments at this rate is too short to split


@ray.remote(num_cpus=0, max_retries=0)
def _video_duration_ms(location: str) -> int | None:
    with MediaReader(location, audio=False) as media:
        return media.info.duration_ms


def plan_decode(source: Source, cfg: RunConfig) -> list[tuple[int, int | None] | None]:
    """The decode tasks of ``source``: [None] (one pass), or the segments of a long file
    (operators.decode.plan_segments), at most one per CPU of the cluster. The header is read in a
    worker, never in the driver (a hostile file must not take the driver down); a file that
    cannot be read there is one pass, and its decode task says what is wrong with it."""
    if source.is_stream or not cfg.segment_s or not os.path.isfile(source.location) \
            or os.path.getsize(source.location) < 2 * cfg.segment_s * MIN_VIDEO_BYTES_PER_S:
        return [None]
    try:
        duration_ms = ray.get(_video_duration_ms.remote(source.location), timeout=60)
    except Exception:  # noqa: BLE001 - no video, unreadable, or the worker died: one pass decides
        return [None]
    spans = plan_segments(duration_ms, cfg.segment_s * 1000, int(ray.cluster_resources().get("CPU", 1)), cfg.window_s * 1000)
    return [None] if len(spans) == 1 else spans


def cancel(task) -> None:
    """Stop a decode task, or a list of them (a no-op for those that have finished)."""
    for t in task if isinstance(task, list) else [task]:
        try:
            ray.cancel(t, force=True)
        except Exception:  # noqa: BLE001 - already finished
            pass


class DecodeFollower:
    """Reads one decode generator in a driver thread. Headers are fetched, frames and audio are
    not: their refs go to the operator pools, and the pools' result refs travel on to the
    backbone in a WindowRefs. Files patchify a few frames per pool call; live frames go one by
    one, at once (the backbone prefills each as it comes)."""

    def __init__(self, pools: OperatorPools, put, window_ms: int, live: bool, attempt: int = 0):
        self.pools, self.put, self.width, self.live, self.attempt = pools, put, window_ms, live, attempt
        self.patches: dict[int, list] = defaultdict(list)  # window -> refs of lists of Patches, in frame order
        self.frames: list = []  # refs of frames not yet sent to the pool, all of window frames_k
        self.frames_k = -1
        self.audio: dict[int, object] = {}
        self.in_pool: deque = deque()  # (patchify call, frames): calls not yet known finished bound the frames in memory

    def follow(self, gen, stopping, deadline: float | None) -> None:
        """Until Finished or Failed (put on the feed); raises TimeoutError past ``deadline``
        (monotonic) and RuntimeError when the stream stops early (its worker was lost)."""
        items = iter(gen)
        for ref in items:
            if stopping.is_set():
                return
            head = ray.get(ref)  # a small header; the frame or samples after it are never fetched here
            if isinstance(head, FrameHead):
                self._frame(head, next(items))
            elif isinstance(head, AudioHead):
                self.audio[head.index] = self.pools.frame_audio(next(items))
            elif isinstance(head, WindowHead):
                self._window(head.spec)
            else:  # Opened, Finished, Failed
                self.put(head)
                if isinstance(head, (Finished, Failed)):
                    return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("timed out")
        if not stopping.is_set():
            raise RuntimeError("the decode stream ended before the source did")

    def _submit(self, refs: list):
        call = self.pools.patchify(refs)
        self.in_pool.append((call, len(refs)))
        while sum(n for _, n in self.in_pool) > MAX_FRAMES_IN_POOL:
            ray.wait([self.in_pool.popleft()[0]], fetch_local=False)
        return call

    def _flush(self) -> None:
        if self.frames:
            self.patches[self.frames_k].append(self._submit(self.frames))
            self.frames = []

    def _frame(self, head: FrameHead, frame_ref) -> None:
        if self.live:
            self.put(LiveFrame(head.index * self.width, head.frame_ms, self._submit([frame_ref]), head.decoded_at))
            return
        if head.index != self.frames_k:  # a new window's first frame can come before the last window's spec
            self._flush()
            self.frames_k = head.index
        self.frames.append(frame_ref)
        if len(self.frames) == FRAMES_PER_CALL:
            self._flush()

    def _window(self, spec: WindowSpec) -> None:
        if self.frames_k == spec.index:
            self._flush()
        self.put(WindowRefs(spec, tuple(self.patches.pop(spec.index, [])), self.audio.pop(spec.index, None), self.attempt))


# The operator pools hold no CPU reservation (num_cpus=0, as Ray's default for a running actor):
# they are light numpy/torch work and must not keep decode tasks from being scheduled on a
# 2-core machine; the OS shares the cores. A killed pool actor restarts and its call is retried.
# max_task_retries=-1: a call retries until the actor is back or dead for good (its restarts
# spent). A bounded count is spent in milliseconds against a node that died but is not yet
# declared dead (connection refused, over and over), and the windows were lost.
@ray.remote(num_cpus=0, max_restarts=2, max_task_retries=-1)
class PatchifyActor:
    """RGB frames -> 48x48x3 cells + positions (operators.patchify), a few frames per call."""

    def __init__(self, budget: int):
        import torch

        torch.set_num_threads(1)
        self.budget = budget

    def patchify(self, *parts: FramePart) -> list:
        from onepass.operators.patchify import patchify

        return [patchify(part.rgb, self.budget, video=True) for part in parts]


@ray.remote(num_cpus=0, max_restarts=2, max_task_retries=-1)
class AudioFrameActor:
    """A window's 16 kHz samples -> [n, 640] frames (operators.audio), the last one zero-padded."""

    def frame(self, part: AudioPart):
        from onepass.operators.audio import frame_audio

        return frame_audio(part.samples)[0]


class OperatorPools:
    """The patchify and audio-frame actor pools; calls go round robin and return ObjectRefs."""

    def __init__(self, cfg: RunConfig):
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n_patch = cfg.patch_actors or max(1, cpus // 4)
        self.patchifiers = [PatchifyActor.remote(cfg.budget) for _ in range(n_patch)]
        self.framers = [AudioFrameActor.remote() for _ in range(cfg.audio_actors)]
        self._patch_turn, self._audio_turn = itertools.count(), itertools.count()

    def patchify(self, frame_refs: list):
        """One call for several frames (Ray's per-call cost is ~3 ms on 2 cores): a ref to their list of Patches."""
        return self.patchifiers[next(self._patch_turn) % len(self.patchifiers)].patchify.remote(*frame_refs)

    def frame_audio(self, audio_ref):
        return self.framers[next(self._audio_turn) % len(self.framers)].frame.remote(audio_ref)


def backbone_threads(cfg: RunConfig, device) -> int:
    """Torch threads of a backbone actor: on a CPU, ``--threads`` or every core of its node (Ray
    reserves one CPU for the actor, but the model is where the run's time goes, and decode and the
    pools mostly wait for it); on a GPU, the CPUs Ray assigned (the host side only feeds the card)."""
    import os

    if device.type == "cpu":
        return cfg.threads or max(1, len(os.sched_getaffinity(0)))
    return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))


@ray.remote(max_restarts=2, max_task_retries=-1)
class BackboneActor:
    """One per device, shared by all sources: batches windows through the runner. Windows arrive
    as specs plus their arrays (patches, audio frames), which Ray resolves from the pools'
    results in the object store. With no task asked for, the model is not loaded."""

    def __init__(self, cfg: RunConfig):
        from onepass.model.tasks import TaskSet

        self.tasks = cfg.task_set
        self.runner = None
        self.sessions = {}
        self.stream_patches: dict[tuple[str, int], list] = {}  # live: each streamed frame's patches, by window
        if self.tasks != TaskSet(False, False, False):
            import torch

            from onepass.model.load import load_backbone
            from onepass.model.runner import Runner

            self.backbone = load_backbone(cfg.model, device=cfg.device, dtype=cfg.dtype, quantize=cfg.quantize)
            torch.set_num_threads(backbone_threads(cfg, self.backbone.device))
            self.runner = Runner(self.backbone, max_new_tokens=cfg.max_new_tokens)

    def analyse(self, specs: list[WindowSpec], layout: list[tuple[int, bool]], *arrays):
        """``arrays``: for each spec in order, ``layout[i][0]`` lists of patches (from the
        patchify pool, frame order), then its audio frames if ``layout[i][1]``."""
        from onepass.model.analyse import analyse

        return analyse(self.runner, assemble(specs, layout, arrays), self.tasks)

    def stream_frame(self, source_id: str, window_start_ms: int, frame_ms: int, patches: list, has_audio: bool) -> None:
        """Prefill a live frame into its window's cache as soon as it is decoded."""
        if self.runner is None:
            return
        from onepass.model.runner import StreamSession

        key = (source_id, window_start_ms)
        if key not in self.sessions:
            self.sessions[key] = StreamSession(self.runner, window_start_ms, has_video=True, has_audio=has_audio)
            self.stream_patches[key] = []
        self.sessions[key].add_frame(frame_ms, patches[0])
        self.stream_patches[key].append((frame_ms, patches[0]))  # per-frame units (captions) ask each frame alone

    def stream_window(self, spec: WindowSpec, audio=None):
        """The live window's audio and tasks, on top of the frames already prefilled."""
        from onepass.model.analyse import analyse, analyse_streamed

        key = (spec.source_id, spec.span.start_ms)
        streamed = dict(self.stream_patches.pop(key, []))
        kept = tuple(t for t in spec.frame_ms if t in streamed)
        window = spec.window(tuple(streamed[t] for t in kept), audio)
        if kept != spec.frame_ms:  # a frame that never reached the backbone: the window holds the others
            window = dataclasses.replace(window, frame_ms=kept)
        session = self.sessions.pop(key, None)
        if self.runner is None:
            return analyse(None, [window], self.tasks)[0]
        return analyse_streamed(self.runner, session, window, self.tasks)

    def throughput(self) -> str:
        return self.runner.stats.line() if self.runner is not None else "backbone: not loaded (no task asked for)"


def assemble(specs: list[WindowSpec], layout: list[tuple[int, bool]], arrays) -> list:
    """Windows from their specs and the resolved pool results, laid out as WindowRefs.layout says."""
    if len(specs) != len(layout) or sum(n + a for n, a in layout) != len(arrays):
        raise ValueError(f"{len(arrays)} arrays do not match the layout of {len(specs)} windows")
    windows, pos = [], 0
    for spec, (n_lists, has_audio) in zip(specs, layout):
        patches = [p for lst in arrays[pos:pos + n_lists] for p in lst]
        pos += n_lists
        audio = None
        if has_audio:
            audio, pos = arrays[pos], pos + 1
        windows.append(spec.window(tuple(patches), audio))
    return windows


def _on_this_node() -> dict:
    """Task options that pin a task to the driver's machine (a decoder reading a local pipe)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)}


class BackboneCall:
    """Batches in flight, one per backbone actor; ``ready()`` does not block."""

    def __init__(self, refs: list, windows: list[list[WindowRefs]]):
        self.refs, self.windows = refs, windows

    def ready(self) -> bool:
        done, _ = ray.wait(self.refs, num_returns=len(self.refs), timeout=0, fetch_local=False)
        return len(done) == len(self.refs)

    def results(self) -> list[tuple[WindowRefs, object]]:
        """(the window sent, its WindowResult), in the order sent; blocks until all are back."""
        return [(w, r) for ws, rs in zip(self.windows, ray.get(self.refs)) for w, r in zip(ws, rs, strict=True)]


class Backbones:
    """The backbone actors: one per GPU of the cluster (``num_gpus=1`` each), else one on the CPU.
    Live streams keep their KV caches on the first."""

    def __init__(self, cfg: RunConfig):
        gpus = int(ray.cluster_resources().get("GPU", 0)) if cfg.device in (None, "cuda") else 0
        self.actors = [BackboneActor.options(num_gpus=1).remote(cfg) for _ in range(gpus)] if gpus else [BackboneActor.remote(cfg)]

    def submit(self, windows: list[WindowRefs]) -> BackboneCall:
        """One batch per actor, run side by side. The arrays go as top-level ObjectRef arguments:
        Ray hands each actor the pools' results straight from the object store."""
        refs, parts = [], []
        n = len(self.actors)
        for actor, part in zip(self.actors, (windows[i::n] for i in range(n))):
            if part:
                refs.append(actor.analyse.remote([w.spec for w in part], [w.layout for w in part], *[r for w in part for r in w.refs]))
                parts.append(part)
        return BackboneCall(refs, parts)

    def stream_frame(self, source_id: str, frame: LiveFrame, has_audio: bool) -> None:
        self.actors[0].stream_frame.remote(source_id, frame.window_start_ms, frame.frame_ms, frame.patches, has_audio)

    def stream_window(self, window: WindowRefs):
        """A live window's result (blocks: live windows are committed one by one, in order)."""
        return ray.get(self.actors[0].stream_window.remote(window.spec, *([window.audio] if window.audio is not None else [])))

    def throughput(self) -> str:
        return ray.get(self.actors[0].throughput.remote())
