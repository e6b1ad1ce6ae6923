"""The one module that imports Ray: starts it, and wraps the operators and the backbone as
remote stages. Everything it calls is plain Python that runs (and is tested) without Ray."""

from __future__ import annotations

import warnings

import ray

from onepass.operators.decode import DecodeError, MediaReader

from .config import RunConfig
from .sources import Source
from .windows import LiveFrame, iter_windows

__all__ = ["start_ray", "decode_source", "BackboneActor", "start_backbones"]


def start_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Join ``address``, or start a local Ray on 127.0.0.1 with no dashboard, no job API, no
    client server, and token authentication on (see :func:`onepass.pipeline.ray_env.local_ray_env`).
    Its servers then bind to loopback only; the token still keeps other local users out."""
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        return
    from ray._private import ray_constants

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


# at most 8 items (about 8 windows) wait unread per source: decode never runs far ahead of the backbone
@ray.remote(num_cpus=1, max_retries=0, _generator_backpressure_num_objects=8)
def decode_source(source: Source, cfg: RunConfig):
    """Streams ('info', dict), then ('window', Window)..., then ('end', stats) or ('error', reason)."""
    try:
        with MediaReader(source.location, fps=cfg.fps, mode=cfg.decode_mode) as media:
            info = media.info
            yield ("info", {
                "size_bytes": info.size_bytes, "duration_ms": info.duration_ms, "start_offset_ms": info.start_ms,
                "container": info.container, "video_codec": info.video_codec, "audio_codec": info.audio_codec,
                "width": info.width, "height": info.height, "fps": info.avg_fps,
                "sample_rate_hz": info.sample_rate_hz, "channels": info.channels,
            })
            for item in iter_windows(media, source.id, window_s=cfg.window_s, budget=cfg.budget, live=source.is_stream):
                yield ("frame", item) if isinstance(item, LiveFrame) else ("window", item)
            yield ("end", {"corrupt_packets": media.stats.corrupt_packets, "errors": media.stats.errors})
    except DecodeError as exc:
        yield ("error", exc.reason)
    except Exception as exc:  # noqa: BLE001 - any other failure is this source's, not the run's
        yield ("error", f"{type(exc).__name__}: {exc}")


@ray.remote(max_restarts=2, max_task_retries=2)
class BackboneActor:
    """One per device, shared by all sources: batches windows through the runner."""

    def __init__(self, cfg: RunConfig):
        import torch

        from onepass.model.load import load_backbone
        from onepass.model.runner import Runner

        torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
        self.backbone = load_backbone(cfg.model, device=cfg.device, dtype=cfg.dtype)
        self.runner = Runner(self.backbone, max_new_tokens=cfg.max_new_tokens)
        from onepass.model.analyse import TaskSet

        self.tasks = TaskSet.parse(cfg.tasks, cfg.questions)

        self.sessions = {}

    def analyse(self, *windows):
        from onepass.model.analyse import analyse

        return analyse(self.runner, list(windows), self.tasks)

    def stream_frame(self, frame: LiveFrame, has_audio: bool) -> None:
        """Prefill a live frame into its window's cache as soon as it is decoded."""
        from onepass.model.runner import StreamSession

        key = (frame.source_id, frame.window_start_ms)
        if key not in self.sessions:
            self.sessions[key] = StreamSession(self.runner, frame.window_start_ms, has_video=True, has_audio=has_audio)
        self.sessions[key].add_frame(frame.frame_ms, frame.patches)

    def stream_window(self, window):
        """The live window's audio and tasks, on top of the frames already prefilled."""
        from onepass.model.analyse import analyse_streamed

        session = self.sessions.pop((window.source_id, window.span.start_ms), None)
        return analyse_streamed(self.runner, session, window, self.tasks)

    def throughput(self) -> str:
        return self.runner.stats.line()


def start_backbones(cfg: RunConfig) -> list:
    """One backbone actor per GPU of the cluster (``num_gpus=1`` each), else one on the CPU."""
    gpus = int(ray.cluster_resources().get("GPU", 0)) if cfg.device in (None, "cuda") else 0
    if gpus:
        return [BackboneActor.options(num_gpus=1).remote(cfg) for _ in range(gpus)]
    return [BackboneActor.remote(cfg)]
