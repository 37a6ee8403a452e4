"""Preserve-rate schedules: the formulas ("Schedules", docs/design.md), checked independently."""
import math

import pytest

from mmdet_maxq.sparsity import SCHEDULE_KINDS, preserve_rate


def spec_rate(kind, e, s, t):
    """The spec's text, transcribed."""
    if s == t:
        return 1.0 if e < s else 0.0
    clipped = min(max(1 - (e - s) / (t - s), 0.0), 1.0)
    if kind == 'linear':
        return clipped
    if kind == 'cubic':
        return clipped**3
    if e < s:
        return 1.0
    if e >= t:
        return 0.0
    if kind == 'cos':
        return math.cos(math.pi / 2 * (e - s) / (t - s))
    if t - s == 1:
        return 1.0
    q = lambda j: 1 - math.exp(-0.05 * j)  # noqa: E731
    return 1 - q(e - s) / q(t - s - 1)


def test_kinds():
    assert SCHEDULE_KINDS == ('linear', 'cubic', 'cos', 'exp')


@pytest.mark.parametrize('kind', SCHEDULE_KINDS)
@pytest.mark.parametrize('s, t', [(0, 10), (2, 10), (5, 6), (3, 40)])
def test_formulas_at_every_step(kind, s, t):
    for e in range(0, t + 4):
        assert preserve_rate(kind, e, s, t) == pytest.approx(spec_rate(kind, e, s, t),
                                                             rel=1e-12, abs=1e-12)


def test_known_values():
    assert preserve_rate('linear', 6, 2, 10) == 0.5
    assert preserve_rate('cubic', 6, 2, 10) == 0.125
    assert preserve_rate('cos', 6, 2, 10) == pytest.approx(math.sqrt(0.5))
    q = lambda j: 1 - math.exp(-0.05 * j)  # noqa: E731
    assert preserve_rate('exp', 4, 2, 10) == pytest.approx(1 - q(2) / q(7))
    assert preserve_rate('exp', 9, 2, 10) == pytest.approx(0.0, abs=1e-15)  # q(7) / q(7)
    # exp falls faster than linear early on
    assert preserve_rate('exp', 3, 2, 10) < preserve_rate('linear', 3, 2, 10)


@pytest.mark.parametrize('kind', SCHEDULE_KINDS)
def test_boundaries_and_monotone(kind):
    rates = [preserve_rate(kind, e, 3, 9) for e in range(15)]
    assert rates[:4] == [1.0] * 4 and rates[9:] == [0.0] * 6
    assert all(0.0 <= r <= 1.0 for r in rates)
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    # Strictly falling inside the window [3, 9); exp, 1 - q(e - 3) / q(5), reaches 0 at e = 8.
    falling = rates[3:9] if kind == 'exp' else rates[3:10]
    assert all(a > b for a, b in zip(falling, falling[1:]))
    assert (rates[8] == 0.0) == (kind == 'exp')
    assert all(isinstance(r, float) for r in rates)


@pytest.mark.parametrize('kind', SCHEDULE_KINDS)
def test_start_equals_end(kind):
    # 1 before, 0 from start on; 0 == 0 is full N:M from the first step.
    assert [preserve_rate(kind, e, 4, 4) for e in (0, 3, 4, 5, 100)] == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert preserve_rate(kind, 0, 0, 0) == 0.0


def test_exp_single_step_window():
    assert preserve_rate('exp', 4, 5, 6) == 1.0
    assert preserve_rate('exp', 5, 5, 6) == 1.0 and preserve_rate('exp', 6, 5, 6) == 0.0
