import math

import pytest

from mmdet_maxq.sparsity import SCHEDULE_KINDS, preserve_rate


def test_formulas_at_points():
    s, t = 2, 10
    for e in range(0, 14):
        lin = min(max(1 - (e - s) / (t - s), 0), 1)
        assert preserve_rate('linear', e, s, t) == pytest.approx(lin)
        assert preserve_rate('cubic', e, s, t) == pytest.approx(lin**3)
        cos = 1.0 if e < s else (math.cos(math.pi / 2 * (e - s) / (t - s)) if e < t else 0.0)
        assert preserve_rate('cos', e, s, t) == pytest.approx(cos)
        q = lambda j: 1 - math.exp(-0.05 * j)  # noqa: E731
        exp = 1.0 if e < s else (1 - q(e - s) / q(t - s - 1) if e < t else 0.0)
        assert preserve_rate('exp', e, s, t) == pytest.approx(exp)
    assert preserve_rate('linear', 6, 2, 10) == pytest.approx(0.5)
    assert preserve_rate('cubic', 6, 2, 10) == pytest.approx(0.125)
    assert preserve_rate('exp', 9, 2, 10) == pytest.approx(0.0)  # q(7) / q(7)


@pytest.mark.parametrize('kind', SCHEDULE_KINDS)
def test_boundaries_and_monotone(kind):
    rates = [preserve_rate(kind, e, 3, 9) for e in range(15)]
    assert rates[:4] == [1.0, 1.0, 1.0, 1.0] and rates[9:] == [0.0] * 6
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    # start == end: 1 before, 0 from start; 0 == 0 is full N:M from the first step.
    assert [preserve_rate(kind, e, 4, 4) for e in (3, 4, 5)] == [1.0, 0.0, 0.0]
    assert preserve_rate(kind, 0, 0, 0) == 0.0


def test_exp_single_step_window():
    assert preserve_rate('exp', 5, 5, 6) == 1.0 and preserve_rate('exp', 6, 5, 6) == 0.0


@pytest.mark.parametrize('args, match', [
    (('step', 1, 0, 5), "unknown schedule kind 'step'; valid kinds are"),
    (('linear', 1, 6, 5), 'start must be <= end'),
    (('linear', -1, 0, 5), 'step must be an integer >= 0'),
    (('cos', 1.5, 0, 5), 'step must be an integer >= 0'),
])
def test_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        preserve_rate(*args)
