from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onepass.operators.spans import Span, ms_from_pts, ms_to_clock

ms = st.integers(min_value=0, max_value=10**9)


@st.composite
def spans(draw):
    a, b = draw(ms), draw(ms)
    return Span(min(a, b), max(a, b))


@given(spans(), spans())
def test_intersection_is_inside_both_and_symmetric(a, b):
    c = a.intersect(b)
    assert c == b.intersect(a)
    assert (c is not None) == a.overlaps(b)
    if c is not None:
        assert a.start_ms <= c.start_ms < c.end_ms <= a.end_ms
        assert b.start_ms <= c.start_ms < c.end_ms <= b.end_ms


@given(st.integers(0, 10**7), st.sampled_from([Fraction(1, 1000), Fraction(1, 90000), Fraction(1001, 30000), Fraction(1, 48000)]))
def test_pts_grid_round_trip(pts, tb):
    t = ms_from_pts(pts, tb)
    assert abs(Fraction(t) - Fraction(pts) * tb * 1000) <= Fraction(1, 2)
    if tb == Fraction(1, 1000):
        assert t == pts


@given(st.integers(0, 10**6), st.integers(0, 10**6))
def test_shift_keeps_duration_and_clip_stays_inside(s, d):
    span = Span(s, s + d)
    assert span.shift(17).duration_ms == d
    bounds = Span(1000, 5000)
    c = span.clip(bounds)
    assert bounds.start_ms <= c.start_ms <= c.end_ms <= bounds.end_ms


def test_span_rules():
    with pytest.raises(ValueError):
        Span(5, 4)
    with pytest.raises(TypeError):
        Span(0.5, 1)
    assert Span(0, 10) < Span(1, 2)
    assert not Span(0, 10).overlaps(Span(10, 20))
    assert ms_to_clock(61_999) == "01:01"
    assert ms_to_clock(3_600_000) == "60:00"
