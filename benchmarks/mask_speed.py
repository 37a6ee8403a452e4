"""MaxQ mask time for every N:M-eligible conv of a ResNet-50: selection vs sort reference.

Builds the 52 eligible conv weights of ResNet-50 itself (C % 8 == 0: conv1/conv2/conv3 of
every bottleneck and the four downsample convs, 23.4 M weights; the 3-channel stem is left
out), random normal with a fixed seed, and computes all their masks with ``maxq_mask``, with
the spec-literal sort-based ``reference_maxq_mask`` and with a plain batched ``topk`` /
``kthvalue`` transcription of the spec written here (ties broken however ``topk`` breaks
them, unlike the other two, which break them like a stable sort), in turn within each repeat
so that machine noise hits all alike. Prints the median times, their ratios, whether every
output is identical (``torch.equal``, no tolerance) and the peak extra memory of one layer:

- CUDA: ``torch.cuda.max_memory_allocated()`` during the call minus the memory allocated
  before it;
- CPU: the peak of the running total of tensor allocations minus frees reported by
  ``torch.profiler`` (``profile_memory=True``, events in start order) during the call.

Both count the returned mask. Reported for the largest layer and as the maximum over layers.

Also timed: the packed computation of all 52 masks at once
(:class:`mmdet_maxq.sparsity.batched.PackedMasks`, the path of GPU refreshes; on the CPU
the refresh uses the per-conv ``maxq_mask``, faster there), checked identical; and, on
``meta`` tensors, the number of ATen ops one refresh of the 52 convs dispatches (the host
overhead on a GPU, where every op is a launch): per conv as before
(``maxq_mask`` and a copy into the buffer, conv after conv) and packed (one
``PackedMasks`` computation, the layout built beforehand, plus one ``_foreach_copy_``).
On CUDA everything runs twice: in float32, and under
``torch.autocast('cuda', dtype=torch.float16)`` (as in ``--amp`` training).

Example::

    python benchmarks/mask_speed.py --n 2 --m 8 --preserve 0.5 --repeats 5 --device cpu
    python benchmarks/mask_speed.py --n 2 --m 8 --preserve 0.5 --repeats 20 --device cuda
"""
import argparse
import contextlib
import math
import os
import statistics
import sys
import tempfile
import time

import torch

# The sort-based reference lives with the tests (it is not part of the package).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import OpCounter  # noqa: E402
from mmdet_maxq.sparsity import maxq_mask  # noqa: E402
from mmdet_maxq.sparsity.batched import PackedMasks  # noqa: E402
from tests.sparsity.reference import reference_maxq_mask  # noqa: E402


def plain_topk_mask(weight: torch.Tensor, n: int, m: int, preserve: float = 0.0,
                    tau: float = 1e-2) -> torch.Tensor:
    """``S = L * (1 + F + P)`` with plain batched ``topk`` / ``kthvalue``, for comparison.

    A straightforward transcription of the mask's definition ("The mask" in
    ``docs/design.md``): ``topk`` per block for ``L``, ``topk`` of the smallest
    ``torch.sum`` block norms for the exemption, ``kthvalue`` per row for the soft queries,
    whose dropped entries are all those ``<=`` the K-th smallest. Ties are not broken like a
    stable sort (and the norms are not summed left to right), so on tied weights it may
    differ from the spec.
    """
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    a = weight.detach().to(dtype).abs()
    a4 = a[:, :, None, None] if a.dim() == 2 else a
    o, c, kh, kw = a4.shape
    blocks = a4.permute(0, 2, 3, 1).reshape(-1, m)
    hard = torch.zeros_like(blocks).scatter_(1, blocks.topk(n, dim=1).indices, 1.0)
    exempt = math.floor(preserve * blocks.shape[0])
    if exempt:
        hard.index_fill_(0, blocks.sum(dim=1).topk(exempt, largest=False).indices, 1.0)
    hard = hard.reshape(o, kh, kw, c).permute(0, 3, 1, 2)

    def query(rows):
        k = (m - n) * rows.shape[1] // m
        if k == 0:
            return torch.sigmoid((rows - rows.amin(dim=1, keepdim=True)) / tau)
        low = rows.kthvalue(k, dim=1, keepdim=True).values
        high = rows.kthvalue(k + 1, dim=1, keepdim=True).values
        return torch.sigmoid((rows - (low + high) / 2) / tau) * (rows > low)

    soft = 1 + query(a4.reshape(o, c * kh * kw)).reshape(a4.shape)
    if kh * kw > 1:
        soft = soft + query(a4.reshape(o * c, kh * kw).t()).t().reshape(a4.shape)
    return (hard * soft).reshape(weight.shape).to(weight.dtype)


REFERENCE, MAXQ, PLAIN = 'sort-based reference', 'maxq_mask (selection)', 'plain batched topk'
METHODS = ((REFERENCE, reference_maxq_mask), (MAXQ, maxq_mask), (PLAIN, plain_topk_mask))


def resnet50_eligible_shapes(m: int = 8):
    """Conv weight shapes of ResNet-50's bottlenecks and downsamples with ``C % m == 0``."""
    shapes = []
    inplanes = 64
    for planes, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for i in range(blocks):
            shapes += [(planes, inplanes, 1, 1), (planes, planes, 3, 3),
                       (planes * 4, planes, 1, 1)]
            if i == 0:
                shapes.append((planes * 4, inplanes, 1, 1))
            inplanes = planes * 4
    return [s for s in shapes if s[1] % m == 0]


def _sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def run_all(fn, weights, args):
    """Masks of every layer; returns (seconds, masks)."""
    _sync(args.device)
    start = time.perf_counter()
    masks = [fn(w, args.n, args.m, preserve=args.preserve) for w in weights]
    _sync(args.device)
    return time.perf_counter() - start, masks


@contextlib.contextmanager
def without_usdt_lines():
    """Drop the ``USDT:`` lines libkineto writes to stderr at every profiler start and stop.

    Only those lines: whatever else reaches stderr (file descriptor 2) meanwhile is passed on.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors='replace')
            sys.stderr.writelines(line for line in text.splitlines(keepends=True)
                                  if not line.startswith('USDT:'))
            sys.stderr.flush()


def peak_extra_bytes(fn, weight, args) -> int:
    """Peak bytes allocated on top of what existed before, while computing one mask."""
    if args.device == 'cuda':
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        mask = fn(weight, args.n, args.m, preserve=args.preserve)  # noqa: F841 (kept alive)
        torch.cuda.synchronize()
        del mask
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile
    with without_usdt_lines():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn(weight, args.n, args.m, preserve=args.preserve)
    live = peak = 0
    # Self usage of each event: what it allocated minus what it freed, children excluded.
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


@torch.no_grad()
def refresh_op_counts(shapes, args):
    """ATen ops of one refresh of ``shapes`` on ``meta``: (per conv, packed)."""
    weights = [torch.empty(s, device='meta') for s in shapes]
    buffers = [torch.empty(s, device='meta') for s in shapes]
    with OpCounter() as per_conv:
        for w, b in zip(weights, buffers):
            b.copy_(maxq_mask(w.detach(), args.n, args.m, preserve=args.preserve))
    plan = PackedMasks(shapes, args.n, args.m, 'maxq', device='meta')
    views = [b.view(-1) for b in buffers]  # made once, with the layout
    plan.set_preserve([args.preserve] * len(shapes))
    with OpCounter() as packed:
        flat = plan.compute_flat(plan.pack(weights))
        torch._foreach_copy_(views, list(flat.split(plan.sizes)))
    return per_conv.count, packed.count


def time_packed(weights, shapes, args, reference_masks):
    """Median seconds of the packed masks of all weights; whether they equal the others."""
    plan = PackedMasks(shapes, args.n, args.m, 'maxq', device=weights[0].device,
                       dtype=weights[0].dtype)
    rates = [args.preserve] * len(weights)
    times = []
    for repeat in range(args.repeats + 1):
        _sync(args.device)
        start = time.perf_counter()
        masks = plan.masks(weights, rates)
        _sync(args.device)
        if repeat:
            times.append(time.perf_counter() - start)
    same = all(torch.equal(a, b) for a, b in zip(masks, reference_masks))
    return statistics.median(times), times, same


def _differences(outputs, name, other):
    """(number of masks that differ, max |difference|) between two methods' outputs."""
    pairs = list(zip(outputs[name], outputs[other]))
    differ = sum(not torch.equal(a, b) for a, b in pairs)
    max_diff = max(float((a.double() - b.double()).abs().max()) for a, b in pairs)
    return differ, max_diff


def run_pass(weights, shapes, args) -> bool:
    """Time, compare and measure the methods once; returns whether maxq == reference."""
    times = {name: [] for name, _ in METHODS}
    outputs = {}
    for repeat in range(args.repeats + 1):
        for name, fn in METHODS:
            seconds, outputs[name] = run_all(fn, weights, args)
            if repeat:  # repeat 0 is the warm-up
                times[name].append(seconds)
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, _ in METHODS:
        spread = ', '.join(f'{t * 1e3:.0f}' for t in times[name])
        print(f'{name:24s} {medians[name] * 1e3:8.1f} ms   (runs: {spread})')
    print(f'speed-up: {medians[REFERENCE] / medians[MAXQ]:.2f}x')
    print(f'{PLAIN}: {medians[PLAIN] / medians[MAXQ]:.2f}x the time of maxq_mask, '
          f'{medians[REFERENCE] / medians[PLAIN]:.2f}x faster than the reference')
    differ, max_diff = _differences(outputs, REFERENCE, MAXQ)
    print(f'outputs identical (torch.equal on all {len(weights)} masks): {differ == 0}; '
          f'max |difference| {max_diff:.3g}')
    plain_differ, plain_diff = _differences(outputs, MAXQ, PLAIN)
    print(f'{PLAIN} identical to maxq_mask: {plain_differ == 0} ({plain_differ} of '
          f'{len(weights)} masks differ; max |difference| {plain_diff:.3g})')
    if not args.skip_packed:
        packed, packed_runs, same = time_packed(weights, shapes, args, outputs[MAXQ])
        spread = ', '.join(f'{t * 1e3:.0f}' for t in packed_runs)
        print(f'{"packed (PackedMasks)":24s} {packed * 1e3:8.1f} ms   (runs: {spread}); '
              f'{medians[MAXQ] / packed:.2f}x the speed of maxq_mask; identical to it: {same}')

    largest = max(range(len(weights)), key=lambda i: weights[i].numel())
    size = weights[largest].numel() * weights[largest].element_size()
    source = 'CUDA allocator' if args.device == 'cuda' else 'torch.profiler CPU allocations'
    print(f'peak extra memory of one layer ({source}, mask included); largest layer '
          f'{shapes[largest]} = {size / 2**20:.1f} MiB of weights:')
    for name, fn in METHODS:
        peaks = [peak_extra_bytes(fn, w, args) for w in weights]
        print(f'  {name:24s} largest layer {peaks[largest] / 2**20:6.1f} MiB '
              f'({peaks[largest] / size:.1f}x its weights), max over layers '
              f'{max(peaks) / 2**20:6.1f} MiB')
    return differ == 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, default=2)
    parser.add_argument('--m', type=int, default=8)
    parser.add_argument('--preserve', type=float, default=0.5)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--skip-packed', action='store_true',
                        help='do not time the packed computation (slow on the CPU)')
    args = parser.parse_args()
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device is available')
    torch.manual_seed(0)
    shapes = resnet50_eligible_shapes(args.m)
    weights = [torch.randn(s).mul_(0.05).to(args.device) for s in shapes]
    numel = sum(w.numel() for w in weights)
    print(f'ResNet-50: {len(weights)} N:M-eligible convs, {numel / 1e6:.1f} M weights, '
          f'{args.n}:{args.m}, preserve {args.preserve}, {args.device}, '
          f'{torch.get_num_threads()} CPU threads, torch {torch.__version__}, '
          f'median of {args.repeats} (after 1 warm-up)')
    per_conv, packed = refresh_op_counts(shapes, args)
    print(f'ATen ops per refresh of the {len(shapes)} convs (meta, no host sync): per conv '
          f'{per_conv}, packed {packed} ({per_conv / packed:.1f}x fewer)', flush=True)
    if args.device == 'cpu':
        identical = run_pass(weights, shapes, args)
    else:
        print(f'GPU: {torch.cuda.get_device_name()}')
        print('== float32 weights ==')
        identical = run_pass(weights, shapes, args)
        print("== float32 weights under torch.autocast('cuda', dtype=torch.float16) ==")
        with torch.autocast('cuda', dtype=torch.float16):
            identical = run_pass(weights, shapes, args) and identical
    if not identical:
        raise SystemExit('maxq_mask and the sort-based reference disagree')


if __name__ == '__main__':
    main()
