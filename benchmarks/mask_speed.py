"""MaxQ mask time for every N:M-eligible conv of a ResNet-50: selection vs sort reference.

Builds the 52 eligible conv weights of ResNet-50 itself (C % 8 == 0: conv1/conv2/conv3 of
every bottleneck and the four downsample convs, 23.4 M weights; the 3-channel stem is left
out), random normal with a fixed seed, and computes all their masks with ``maxq_mask`` and
with the spec-literal sort-based ``reference_maxq_mask``, in turn within each repeat so that
machine noise hits both alike. Prints the median times, their ratio, whether every output is
identical (``torch.equal``, no tolerance) and the peak extra memory of one layer:

- CUDA: ``torch.cuda.max_memory_allocated()`` during the call minus the memory allocated
  before it;
- CPU: the peak of the running total of tensor allocations minus frees reported by
  ``torch.profiler`` (``profile_memory=True``, events in start order) during the call.

Both count the returned mask. Reported for the largest layer and as the maximum over layers.

Example::

    python benchmarks/mask_speed.py --n 2 --m 8 --preserve 0.5 --repeats 5 --device cpu
"""
import argparse
import statistics
import time

import torch

from mmdet_maxq.sparsity import maxq_mask
from mmdet_maxq.sparsity.reference import reference_maxq_mask

METHODS = (('sort-based reference', reference_maxq_mask), ('maxq_mask (selection)', maxq_mask))


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


def peak_extra_bytes(fn, weight, args) -> int:
    """Peak bytes allocated on top of what existed before, while computing one mask."""
    if args.device == 'cuda':
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        mask = fn(weight, args.n, args.m, preserve=args.preserve)
        torch.cuda.synchronize()
        del mask
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(weight, args.n, args.m, preserve=args.preserve)
    live = peak = 0
    # Self usage of each event: what it allocated minus what it freed, children excluded.
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, default=2)
    parser.add_argument('--m', type=int, default=8)
    parser.add_argument('--preserve', type=float, default=0.5)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
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

    times = {name: [] for name, _ in METHODS}
    outputs = {}
    for repeat in range(args.repeats + 1):
        for name, fn in METHODS:
            seconds, outputs[name] = run_all(fn, weights, args)
            if repeat:  # repeat 0 is the warm-up
                times[name].append(seconds)
    (ref_name, _), (fast_name, _) = METHODS
    ref, fast = outputs[ref_name], outputs[fast_name]
    identical = all(torch.equal(a, b) for a, b in zip(ref, fast))
    max_diff = max(float((a - b).abs().max()) for a, b in zip(ref, fast))
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, _ in METHODS:
        spread = ', '.join(f'{t * 1e3:.0f}' for t in times[name])
        print(f'{name:24s} {medians[name] * 1e3:8.1f} ms   (runs: {spread})')
    print(f'speed-up: {medians[ref_name] / medians[fast_name]:.2f}x')
    print(f'outputs identical (torch.equal on all {len(ref)} masks): {identical}; '
          f'max |difference| {max_diff:.3g}')

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
    if not identical:
        raise SystemExit('maxq_mask and the sort-based reference disagree')


if __name__ == '__main__':
    main()
