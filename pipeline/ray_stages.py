"""The one module that imports Ray: starts it, and wraps the operators and the backbone as
remote stages. Everything it calls is plain Python that runs (and is tested) without Ray."""

from __future__ import annotations

import itertools
import threading
import warnings

import ray

from onepass.operators.decode import DecodeError, MediaReader

from .config import RunConfig
from .sources import Source
from .windows import AudioPart, FramePart, WindowSpec, cut_windows

__all__ = ["start_ray", "decode_source", "PatchifyActor", "AudioFrameActor", "OperatorPools", "BackboneActor", "start_backbones", "on_this_node", "assemble"]


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
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        _handle_sigterm()
        return
    from ray._private import ray_constants
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    if not is_token_auth_enabled():  # Ray reads RAY_AUTH_MODE once, when first imported
        raise RuntimeError("Ray was imported before onepass set up its local token authentication: call "
                           "onepass.pipeline.ray_env.local_ray_env() before the first `import ray` (the onepass CLI does)")
    # what RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 sets when read at import (Ray may be imported earlier)
    ray_constants.ENABLE_RAY_CLUSTER = False
    ray.init(
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        num_cpus=num_cpus,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}},
    )
    if ray.util.get_node_ip_address() != "127.0.0.1":
        warnings.warn(f"local Ray took node address {ray.util.get_node_ip_address()}, not 127.0.0.1", stacklevel=2)
    _handle_sigterm()


def _handle_sigterm() -> None:
    import signal

    SIGTERM_RECEIVED.clear()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


# Each frame and each window's audio is yielded as an object of its own, right after a small header
# that says what it is. Objects a generator yields are owned by the caller (the driver), which reads
# only the headers (small: inlined in Ray's reply) and hands the parts' REFS to the operator pools:
# pixels and samples go decode -> object store -> pool actor -> object store -> backbone, and are
# never fetched to the driver, even when the decode task runs on another machine of a cluster.
# At most 16 objects (about 8 frames) wait unread per source: decode never runs far ahead of the driver.
@ray.remote(num_cpus=1, max_retries=0, _generator_backpressure_num_objects=16)
def decode_source(source: Source, cfg: RunConfig):
    """Streams ('info', dict); then ('frame', k, frame_ms, decoded_at) + its FramePart,
    ('audio', k) + its AudioPart, ('window', WindowSpec) as cut_windows makes them; then
    ('end', stats) or ('error', reason)."""
    try:
        read_timeout_s = cfg.stream_timeout_s if source.is_stream else 30.0
        with MediaReader(source.location, fps=cfg.fps, mode=cfg.decode_mode, read_timeout_s=read_timeout_s) as media:
            info = media.info
            yield ("info", {
                "size_bytes": info.size_bytes, "duration_ms": info.duration_ms, "start_offset_ms": info.start_ms,
                "container": info.container, "video_codec": info.video_codec, "audio_codec": info.audio_codec,
                "width": info.width, "height": info.height, "fps": info.avg_fps,
                "sample_rate_hz": info.sample_rate_hz, "channels": info.channels,
            })
            decoded_ms = 0  # how far the windows reach: a file cut short ends before its stated duration
            for part in cut_windows(media, source.id, window_s=cfg.window_s):
                if isinstance(part, FramePart):
                    yield ("frame", part.index, part.frame_ms, part.decoded_at)
                    yield part
                elif isinstance(part, AudioPart):
                    yield ("audio", part.index)
                    yield part
                else:
                    decoded_ms = max(decoded_ms, part.span.end_ms)
                    yield ("window", part)
            yield ("end", {"corrupt_packets": media.stats.corrupt_packets, "errors": media.stats.errors, "decoded_ms": decoded_ms})
    except DecodeError as exc:
        yield ("error", exc.reason)
    except Exception as exc:  # noqa: BLE001 - any other failure is this source's, not the run's
        yield ("error", f"{type(exc).__name__}: {exc}")


# The operator pools hold no CPU reservation (num_cpus=0, as Ray's default for a running actor):
# they are light numpy/torch work and must not keep decode tasks from being scheduled on a
# 2-core machine; the OS shares the cores. A killed pool actor restarts and its call is retried.
@ray.remote(num_cpus=0, max_restarts=2, max_task_retries=2)
class PatchifyActor:
    """RGB frames -> 48x48x3 cells + positions (operators.patchify), a few frames per call."""

    def __init__(self, budget: int):
        import torch

        torch.set_num_threads(1)
        self.budget = budget

    def patchify(self, *parts: FramePart) -> list:
        from onepass.operators.patchify import patchify

        return [patchify(part.rgb, self.budget, video=True) for part in parts]


@ray.remote(num_cpus=0, max_restarts=2, max_task_retries=2)
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


@ray.remote(max_restarts=2, max_task_retries=2)
class BackboneActor:
    """One per device, shared by all sources: batches windows through the runner. Windows arrive
    as specs plus their arrays (patches, audio frames), which Ray resolves from the pools'
    results in the object store. With no task asked for, the model is not loaded."""

    def __init__(self, cfg: RunConfig):
        from onepass.model.tasks import TaskSet

        self.tasks = cfg.task_set
        self.runner = None
        self.sessions = {}
        if self.tasks != TaskSet(False, False, False):
            import torch

            from onepass.model.load import load_backbone
            from onepass.model.runner import Runner

            torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
            self.backbone = load_backbone(cfg.model, device=cfg.device, dtype=cfg.dtype)
            self.runner = Runner(self.backbone, max_new_tokens=cfg.max_new_tokens)

    def analyse(self, specs: list[WindowSpec], *arrays):
        """``arrays``: for each spec in order, its lists of patches (from the patchify pool; one
        patch per frame in all) then its audio frames (if any)."""
        from onepass.model.analyse import analyse

        return analyse(self.runner, assemble(specs, arrays), self.tasks)

    def stream_frame(self, source_id: str, window_start_ms: int, frame_ms: int, patches: list, has_audio: bool) -> None:
        """Prefill a live frame into its window's cache as soon as it is decoded."""
        if self.runner is None:
            return
        from onepass.model.runner import StreamSession

        key = (source_id, window_start_ms)
        if key not in self.sessions:
            self.sessions[key] = StreamSession(self.runner, window_start_ms, has_video=True, has_audio=has_audio)
        self.sessions[key].add_frame(frame_ms, patches[0])

    def stream_window(self, spec: WindowSpec, audio=None):
        """The live window's audio and tasks, on top of the frames already prefilled."""
        from onepass.model.analyse import analyse, analyse_streamed

        window = spec.window((), audio)
        session = self.sessions.pop((spec.source_id, spec.span.start_ms), None)
        if self.runner is None:
            return analyse(None, [window], self.tasks)[0]
        return analyse_streamed(self.runner, session, window, self.tasks)

    def throughput(self) -> str:
        return self.runner.stats.line() if self.runner is not None else "backbone: not loaded (no task asked for)"


def assemble(specs: list[WindowSpec], arrays) -> list:
    """Windows from their specs and the resolved pool results, in the order the driver sends them:
    per window, lists of patches until its frames are covered, then its audio frames if any."""
    windows, pos = [], 0
    for spec in specs:
        patches: list = []
        while len(patches) < len(spec.frame_ms):
            patches += arrays[pos]
            pos += 1
        audio = None
        if spec.audio_frames:
            audio, pos = arrays[pos], pos + 1
        windows.append(spec.window(tuple(patches), audio))
    if pos != len(arrays):
        raise ValueError(f"{len(arrays) - pos} arrays left over after {len(specs)} windows")
    return windows


def on_this_node() -> dict:
    """Task options that pin a task to the driver's machine (a decoder reading a local pipe)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)}


def start_backbones(cfg: RunConfig) -> list:
    """One backbone actor per GPU of the cluster (``num_gpus=1`` each), else one on the CPU."""
    gpus = int(ray.cluster_resources().get("GPU", 0)) if cfg.device in (None, "cuda") else 0
    if gpus:
        return [BackboneActor.options(num_gpus=1).remote(cfg) for _ in range(gpus)]
    return [BackboneActor.remote(cfg)]
