"""Every default of a run, held once. The CLI fills a RunConfig; nothing else repeats a default."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

MEDIA_EXTENSIONS = frozenset(
    ".mp4 .mkv .mov .avi .webm .m4v .mpg .mpeg .ts .mts .m2ts .flv .wmv .3gp .ogv "
    ".wav .mp3 .m4a .aac .flac .ogg .opus .wma".split()
)
STREAM_SCHEMES = ("rtsp://", "rtmp://", "tcp://", "udp://", "srt://", "http://", "https://", "pipe:")


def voices_fingerprint(folder: str) -> str:
    """The enrolment folder's people and recordings (names, sizes, times): cheap, no decoding."""
    entries = []
    for root, _dirs, files in sorted(os.walk(folder)):
        for f in sorted(files):
            try:
                st = os.stat(os.path.join(root, f))
            except OSError:
                continue
            entries.append(f"{os.path.relpath(os.path.join(root, f), folder)}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunConfig:
    output: Path
    model: Path | None = None  # None: the bundled default model
    tasks: str = "captions,transcript,diarization"
    questions: tuple[str, ...] = ()
    fps: float = 1.0
    budget: int = 70  # soft tokens per frame (one of operators.patchify.BUDGETS)
    window_s: int | None = None  # None: the model's own (onepass.json beside its config; else 30 s)
    decode_mode: str = "fast"
    workers: int = 2  # sources decoded at once
    segment_s: int = 600  # a file at least twice this long is decoded in segments of about this length, side by side (0: never)
    batch_windows: int = 4  # windows per backbone batch
    patch_actors: int | None = None  # patchify pool size; None: one per 4 CPUs of the cluster (at least 1)
    audio_actors: int = 1  # audio-frame pool size (framing is a reshape: one keeps up with many sources)
    max_new_tokens: int = 256
    address: str | None = None  # join an existing Ray cluster
    force: bool = False
    device: str | None = None
    dtype: str | None = None
    quantize: str | None = None  # weight-only int8 / int4 of the decoder's linear layers (model/quantize.py)
    threads: int | None = None  # the backbone's torch threads on a CPU; None: every core of its node
    num_speakers: int | None = None  # --speakers: exactly this many per source
    min_speakers: int | None = None  # clustering hints: at least / at most this many per source
    max_speakers: int | None = None
    voices: str | None = None  # --voices DIR: enrolled people named in the speaker columns (model/voices.py)
    telemetry: str | None = None  # a telemetry sidecar for every file, or a folder of <stem>.srt|.csv (pipeline/telemetry.py)
    source_timeout_s: float = 3600.0
    stream_timeout_s: float = 10.0  # a live stream that delivers nothing for this long has ended (UDP has no end)
    task_set: object = field(init=False, repr=False, compare=False, default=None)  # the parsed tasks (model.tasks.TaskSet)

    def __post_init__(self):
        from onepass.model.tasks import TaskSet  # no torch: the driver and decode workers stay light

        task_set = TaskSet.parse(self.tasks, tuple(self.questions))  # ValueError names an unknown task
        object.__setattr__(self, "task_set", task_set)
        object.__setattr__(self, "tasks", ",".join(n for n in ("captions", "transcript", "diarization") if getattr(task_set, n)))
        if self.window_s is None:
            from onepass.model.meta import model_window_s

            object.__setattr__(self, "window_s", model_window_s(self.model))
        if not 1 <= self.window_s <= 30:
            raise ValueError(f"--window-s must be 1..30 (the model takes at most 30 s of audio), got {self.window_s}")
        from onepass.operators.patchify import BUDGETS

        if self.budget not in BUDGETS:
            raise ValueError(f"--budget must be one of {', '.join(map(str, BUDGETS))}, got {self.budget}")
        if self.segment_s < 0:
            raise ValueError(f"--segment-minutes must be >= 0, got {self.segment_s / 60:g}")
        if self.quantize not in (None, "int8", "int4"):
            raise ValueError(f"--quantize must be int8 or int4, got {self.quantize!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")
        if self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
        for name in ("num_speakers", "min_speakers", "max_speakers"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('num_', '').replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.min_speakers and self.max_speakers and self.min_speakers > self.max_speakers:
            raise ValueError(f"--min-speakers {self.min_speakers} is more than --max-speakers {self.max_speakers}")
        if not 0 < self.fps <= 30:
            raise ValueError(f"--fps must be in (0, 30], got {self.fps}")

    def fingerprint(self) -> str:
        """What changes a source's rows: a rerun with another fingerprint redoes the source."""
        keys = ("model", "tasks", "questions", "fps", "budget", "window_s", "decode_mode", "max_new_tokens", "num_speakers")
        d = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items() if k in keys}
        # only when set: fingerprints of runs without them stay as they were
        for k in ("quantize", "min_speakers", "max_speakers"):
            if getattr(self, k):
                d[k] = getattr(self, k)
        if self.voices:  # who is enrolled, from which recordings: another enrolment names speakers anew
            d["voices"] = voices_fingerprint(self.voices)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]
