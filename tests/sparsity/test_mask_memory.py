"""Peak memory of one CPU mask: the buffers ``maxq_mask`` and ``nm_mask`` hold at once.

Measured as ``benchmarks/mask_speed.py`` does (the running total of what ``torch.profiler``
sees allocated minus freed), so a change that keeps one more buffer of the weight's size alive,
or allocates one while a selection holds its temporaries, fails here. The budgets are the
buffers each function needs plus 2% for the small per-row and per-block tensors.
"""
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from mmdet_maxq.sparsity import maxq_mask, nm_mask


def peak_extra_bytes(fn) -> int:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


# Weight-sized buffers: maxq_mask holds |W|, the keep marks, the block columns (a copy only
# for kernels larger than 1x1) or a query's scratch, and P (3x3 only); nm_mask |W|, the
# columns (3x3) and the marks, and returns them in the weight's layout.
@pytest.mark.parametrize('fn, shape, buffers', [
    (maxq_mask, (256, 256, 3, 3), 4),
    (maxq_mask, (1024, 256, 1, 1), 3),
    (nm_mask, (256, 256, 3, 3), 4),
    (nm_mask, (1024, 256, 1, 1), 3),
], ids=['maxq-3x3', 'maxq-1x1', 'nm-3x3', 'nm-1x1'])
@pytest.mark.parametrize('preserve', [0.0, 0.5])
def test_mask_peak_memory(fn, shape, buffers, preserve):
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    peak = peak_extra_bytes(lambda: fn(weight, 2, 8, preserve))
    weight_bytes = weight.numel() * weight.element_size()
    assert peak <= 1.02 * buffers * weight_bytes, (peak / weight_bytes, buffers)
