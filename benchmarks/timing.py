"""Shared measuring helpers of the benchmarks: an ATen op counter and median timers.

Plain PyTorch; the benchmarks import it as ``benchmarks.timing`` (the repository root on
``sys.path``).
"""
import statistics
import time
from typing import Callable, Dict, List, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class OpCounter(TorchDispatchMode):
    """Counts the ATen ops dispatched while active (on a GPU each one is a kernel launch or
    host work of several microseconds)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn: Callable[[], object]) -> int:
    """The number of ATen ops ``fn()`` dispatches."""
    with OpCounter() as counter:
        fn()
    return counter.count


def median_ms_round_robin(fns: Dict[str, Callable[[], object]], device: str, warmup: int,
                          iters: int) -> Dict[str, List[float]]:
    """Time each of ``fns`` ``iters`` times, one call of each in turn (the order rotating
    every round, so machine noise hits them alike), after ``warmup`` untimed rounds.

    On CUDA each call is timed with a pair of CUDA events (GPU time between them, the host's
    launch work included where it delays the GPU); on the CPU with ``time.perf_counter``.

    Args:
        fns (dict): Name -> a callable without arguments.
        device (str): ``'cuda'`` or ``'cpu'``.
        warmup (int): Untimed rounds first.
        iters (int): Timed rounds.

    Returns:
        dict: Name -> every timed call's milliseconds.
    """
    names = list(fns)
    times = {name: [] for name in names}
    cuda = device.startswith('cuda')
    for i in range(warmup + iters):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(
                    enable_timing=True)
                torch.cuda.synchronize()
                start.record()
                fns[name]()
                end.record()
                torch.cuda.synchronize()
                elapsed = start.elapsed_time(end)
            else:
                begin = time.perf_counter()
                fns[name]()
                elapsed = (time.perf_counter() - begin) * 1e3
            if i >= warmup:
                times[name].append(elapsed)
    return times


def median(values: Sequence[float]) -> float:
    """The median of ``values``."""
    return statistics.median(values)
