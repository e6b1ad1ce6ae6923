"""The batcher without Ray: one backbone call in flight, never waiting for it, full batches
unless the feed is idle, and a restarted source's windows dropped."""

from onepass.operators.spans import Span
from onepass.pipeline.batcher import Batcher
from onepass.pipeline.messages import WindowRefs
from onepass.pipeline.windows import WindowSpec


class Call:
    def __init__(self, windows):
        self.windows, self.back = [windows], False

    def ready(self):
        return self.back

    def results(self):
        assert self.back, "results() before the call is back would block the driver"
        return [(w, f"result {w.spec.source_id}/{w.spec.index}") for w in self.windows[0]]


class Backbones:
    actors = [object()]

    def __init__(self):
        self.calls = []

    def submit(self, windows):
        self.calls.append(Call(list(windows)))
        return self.calls[-1]


def window(sid, k, attempt=0):
    return WindowRefs(WindowSpec(sid, k, Span(k * 1000, (k + 1) * 1000), (k * 1000,), k * 1000, 25), attempt=attempt)


def test_one_call_in_flight_and_full_batches():
    bb = Backbones()
    b = Batcher(bb, batch_windows=2)
    b.add(window("a", 0))
    assert b.pump() == [] and not bb.calls  # not full, feed not idle: wait for more
    b.add(window("a", 1))
    assert b.pump() == [] and len(bb.calls) == 1  # full: sent
    b.add(window("b", 0))
    b.add(window("b", 1))
    assert b.pump(idle=True) == [] and len(bb.calls) == 1  # a call in flight: the next batch waits, nothing blocks
    assert b.holds("a") and b.holds("b") and b.busy
    bb.calls[0].back = True
    back = b.pump()
    assert [r for _, r in back] == ["result a/0", "result a/1"] and len(bb.calls) == 2  # collected, next one sent
    assert not b.holds("a") and b.holds("b")


def test_idle_feed_sends_a_partial_batch_and_drop_forgets_a_source():
    bb = Backbones()
    b = Batcher(bb, batch_windows=4)
    b.add(window("a", 0))
    b.add(window("b", 0))
    b.drop("a")
    assert not b.holds("a")
    b.pump(idle=True)
    assert [w.spec.source_id for w in bb.calls[0].windows[0]] == ["b"]


def test_a_failed_call_hands_back_its_windows_to_be_redone():
    """A call whose inputs were lost (a node died with them) raises LostWindows naming every
    window it carried; the batcher is free for the next batch."""
    import pytest

    from onepass.pipeline.batcher import LostWindows

    bb = Backbones()
    b = Batcher(bb, batch_windows=2)
    b.add(window("a", 0))
    b.add(window("b", 0))
    b.pump()
    bb.calls[0].back = True
    bb.calls[0].results = lambda: (_ for _ in ()).throw(RuntimeError("object lost with its node"))
    with pytest.raises(LostWindows) as lost:
        b.pump()
    assert sorted(w.spec.source_id for w in lost.value.windows) == ["a", "b"] and not b.busy
