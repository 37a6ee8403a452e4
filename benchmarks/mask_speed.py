"""MaxQ mask time for every N:M-eligible conv of a ResNet-50: selection vs sort reference.

Builds the 52 eligible conv weights of ResNet-50 (C % 8 == 0: every bottleneck conv and the
four downsample convs, 23.4 M weights; the 3-channel stem is left out), computes all their
masks with ``maxq_mask`` and with the spec-literal sort-based reference, side by side in one
run, checks the outputs are identical (``torch.equal``), and prints median times and the
ratio. Peak extra memory per layer is the largest set of temporaries one layer needs:
measured with ``torch.cuda.max_memory_allocated`` on CUDA, and on the CPU by counting the
bytes of every tensor the mask code allocates (through ``torch.profiler`` memory events).

Example::

    python benchmarks/mask_speed.py --n 2 --m 8 --preserve 0.5 --repeats 5
"""
import argparse
import statistics
import time

import torch

from mmdet_maxq.sparsity import maxq_mask
from mmdet_maxq.sparsity.reference import reference_maxq_mask


def resnet50_eligible_shapes(m: int = 8):
    """Conv weight shapes of ResNet-50's bottlenecks and downsamples with C % m == 0."""
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


def time_all(fn, weights, args, device):
    times = []
    for _ in range(args.repeats):
        if device == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = [fn(w, args.n, args.m, preserve=args.preserve) for w in weights]
        if device == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def peak_extra_bytes(fn, weight, args, device):
    """Largest simultaneous allocation (bytes) while computing one layer's mask."""
    if device == 'cuda':
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn(weight, args.n, args.m, preserve=args.preserve)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(weight, args.n, args.m, preserve=args.preserve)
    live = peak = 0
    # Self usage: allocations (positive) and frees (negative) of each op alone, in time order.
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
    torch.manual_seed(0)
    shapes = resnet50_eligible_shapes(args.m)
    weights = [torch.randn(s, device=args.device) * 0.05 for s in shapes]
    numel = sum(w.numel() for w in weights)
    print(f'ResNet-50: {len(weights)} eligible convs, {numel / 1e6:.1f} M weights, '
          f'{args.n}:{args.m}, preserve {args.preserve}, {args.device}, '
          f'{torch.get_num_threads()} threads, median of {args.repeats}')
    maxq_mask(weights[0], args.n, args.m, preserve=args.preserve)  # warm-up
    reference_maxq_mask(weights[0], args.n, args.m, preserve=args.preserve)
    ref_time, ref_out = time_all(reference_maxq_mask, weights, args, args.device)
    fast_time, fast_out = time_all(maxq_mask, weights, args, args.device)
    identical = all(torch.equal(a, b) for a, b in zip(fast_out, ref_out))
    print(f'sort-based reference: {ref_time * 1000:8.1f} ms')
    print(f'maxq_mask (selection): {fast_time * 1000:8.1f} ms')
    print(f'speed-up: {ref_time / fast_time:.2f}x   outputs identical (torch.equal): {identical}')
    largest = max(weights, key=lambda w: w.numel())
    for name, fn in (('reference', reference_maxq_mask), ('maxq_mask', maxq_mask)):
        peak = peak_extra_bytes(fn, largest, args, args.device)
        print(f'peak extra memory, largest layer {tuple(largest.shape)} '
              f'({largest.numel() * largest.element_size() / 2**20:.1f} MiB weight), {name}: '
              f'{peak / 2**20:.1f} MiB')
    if not identical:
        raise SystemExit('outputs differ')


if __name__ == '__main__':
    main()
