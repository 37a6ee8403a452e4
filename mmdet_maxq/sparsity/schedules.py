"""Incremental-sparsity schedules: the preserve rate (share of blocks exempt from N:M)."""
import math
import numbers

__all__ = ['SCHEDULE_KINDS', 'check_schedule', 'preserve_rate']

SCHEDULE_KINDS = ('linear', 'cubic', 'cos', 'exp')
EXP_RATE = 0.05


def _check_index(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f'{name} must be an integer >= 0 (an epoch or iteration index), '
                         f'got {value!r}')


def check_schedule(kind: str, start: int, end: int) -> None:
    """Refuse a schedule that :func:`preserve_rate` cannot follow: the one home of that check.

    Args:
        kind (str): One of :data:`SCHEDULE_KINDS`.
        start (int): First step of the schedule, an integer >= 0.
        end (int): First step with every block N:M, an integer >= ``start``.

    Raises:
        ValueError: Naming the argument and the fix.
    """
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f'unknown schedule kind {kind!r}; valid kinds are {SCHEDULE_KINDS}')
    _check_index('start', start)
    _check_index('end', end)
    if start > end:
        raise ValueError(f'start must be <= end, got start={start}, end={end}; swap them, or '
                         'use start == end to switch to full N:M at once')


def preserve_rate(kind: str, step: int, start: int, end: int) -> float:
    """Preserve rate ``p`` in [0, 1] at ``step`` of a schedule from ``start`` to ``end``.

    ``p`` is 1 before ``start`` (no block is N:M yet) and 0 from ``end`` on (every block is).
    ``start == end`` switches at once; ``start == end == 0`` is full N:M from the first step.

    - ``linear``: ``clip(1 - (step - start) / (end - start), 0, 1)``
    - ``cubic``: the linear rate cubed
    - ``cos``: ``cos(pi / 2 * (step - start) / (end - start))`` inside ``[start, end)``
    - ``exp``: with ``q(j) = 1 - exp(-0.05 j)``, ``1 - q(step - start) / q(end - start - 1)``
      inside ``[start, end)`` (1 at ``step = start`` when ``end - start == 1``)

    Args:
        kind (str): One of :data:`SCHEDULE_KINDS`.
        step (int): Current epoch or iteration.
        start (int): First step of the schedule.
        end (int): First step with every block N:M.

    Returns:
        float: The preserve rate.
    """
    check_schedule(kind, start, end)
    _check_index('step', step)
    if step < start:
        return 1.0
    if step >= end:
        return 0.0
    frac = (step - start) / (end - start)
    if kind == 'linear':
        return min(max(1.0 - frac, 0.0), 1.0)
    if kind == 'cubic':
        return min(max(1.0 - frac, 0.0), 1.0) ** 3
    if kind == 'cos':
        return math.cos(math.pi / 2 * frac)
    if end - start == 1:
        return 1.0
    return 1.0 - _exp_q(step - start) / _exp_q(end - start - 1)


def _exp_q(j: int) -> float:
    """``q(j) = 1 - exp(-b j)`` of the ``exp`` schedule (``b = EXP_RATE``)."""
    return -math.expm1(-EXP_RATE * j)
