"""The typed messages of a run, in the order data flows.

A decode task (one per source, ``ray_stages.decode_source``) streams small headers; a
:class:`FrameHead` or :class:`AudioHead` is followed by its part (:class:`~.windows.FramePart`,
:class:`~.windows.AudioPart`) as an object of its own, which the driver never fetches::

    Opened, (FrameHead + FramePart | AudioHead + AudioPart | WindowHead)*, Finished | Failed

The driver's thread for that source (``ray_stages.follow_decode``) turns them into feed messages,
with the REFS of what the patchify and audio-frame pools made of the parts::

    Opened, (LiveFrame | WindowRefs)*, Finished | Failed, [Restart ...], Closed

and the driver's loop (``run.py``) batches the WindowRefs of all sources into the backbone
(``batcher.py``) and commits each source when its last result is back (``commit.py``).
Nothing here holds an array: pixels and samples travel as Ray object refs only.
"""

from __future__ import annotations

from dataclasses import dataclass

from onepass.operators.decode import SourceInfo

from .windows import WindowSpec

__all__ = ["Opened", "FrameHead", "AudioHead", "WindowHead", "Finished", "Failed",
           "LiveFrame", "WindowRefs", "Restart", "Closed", "Message", "Fed"]


# -- decode task -> driver ----------------------------------------------------------------------
@dataclass(frozen=True)
class Opened:
    """The source is open: what its header says, and which Ray node decodes it."""

    info: SourceInfo
    node: str | None = None
    segments: int = 1  # decode tasks of this source (pipeline.feed._Segments sets it)


@dataclass(frozen=True)
class FrameHead:
    """A kept frame of window ``index`` follows."""

    index: int
    frame_ms: int
    decoded_at: float  # time.time() when it left the decoder (live latency)


@dataclass(frozen=True)
class AudioHead:
    """The samples of window ``index`` follow."""

    index: int


@dataclass(frozen=True)
class WindowHead:
    """Window ``spec.index`` is complete: its frames and audio went before."""

    spec: WindowSpec


@dataclass(frozen=True)
class Finished:
    """The source ended; ``errors`` are the demuxer's (a file that stopped partway)."""

    corrupt_packets: int = 0
    errors: tuple[str, ...] = ()
    decoded_ms: int = 0  # how far the windows reach


@dataclass(frozen=True)
class Failed:
    reason: str
    node: str | None = None  # the Ray node that tried (None: the driver gave up on the task)


# -- the driver's per-source threads -> the driver's loop ---------------------------------------
@dataclass(frozen=True)
class LiveFrame:
    """A live frame, patchified (``patches`` is a ref to a list of one Patches): prefill it now."""

    window_start_ms: int
    frame_ms: int
    patches: object
    decoded_at: float


@dataclass(frozen=True)
class WindowRefs:
    """A complete window: its spec, refs of its patch lists (frame order) and of its audio frames."""

    spec: WindowSpec
    patches: tuple = ()
    audio: object | None = None
    attempt: int = 0  # which decode attempt of the source made it (a restart discards older ones)

    @property
    def refs(self) -> list:
        return [*self.patches, *([self.audio] if self.audio is not None else [])]

    @property
    def layout(self) -> tuple[int, bool]:
        return len(self.patches), self.audio is not None


@dataclass(frozen=True)
class Restart:
    """The source's decode worker died: forget its partial work, it is decoded again."""

    attempt: int


@dataclass(frozen=True)
class Closed:
    """The source's thread is done: nothing more will come for it."""


Message = Opened | Finished | Failed | LiveFrame | WindowRefs | Restart | Closed


@dataclass(frozen=True)
class Fed:
    """One feed entry: a message, the source it is about, and the decode attempt that sent it
    (the driver ignores what a superseded attempt still sends)."""

    source_id: str
    message: Message
    attempt: int = 0
