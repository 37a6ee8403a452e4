"""Training-iteration time of Faster R-CNN R50-FPN: dense vs SR-STE vs MaxQ, side by side.

Each method's model is built from the same seed; one iteration is what the training loop and
the hooks do: ``SparsityScheduleHook``'s per-iteration mask refresh, ``train_step`` (forward,
backward, optimizer step) and, for SR-STE, the decay step pre-hook. Methods are timed round
robin (one iteration of each in turn, the order rotating every round) so that machine noise
hits them alike; medians are reported with the ratio to dense, and the mask refresh apart.

Example::

    python benchmarks/train_overhead.py --size 320 --iters 8 --n 2 --m 8
"""
import argparse
import statistics
import time

import torch

import mmdet_maxq  # noqa: F401
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmdet_maxq.sparsity import srste_decay_

METHODS = ('dense', 'srste', 'maxq')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=320, help='square image side')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--iters', type=int, default=8, help='timed iterations per method')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--n', type=int, default=2)
    parser.add_argument('--m', type=int, default=8)
    parser.add_argument('--preserve', type=float, default=0.5,
                        help='preserve rate during the timed iterations (mid-schedule)')
    parser.add_argument('--threads', type=int, default=None, help='torch threads')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    return parser.parse_args()


def build(method, args):
    # The project's COCO config: MMDetection's Faster R-CNN R50-FPN 1x (stem and layer1
    # frozen, as in MMDetection) wrapped by SparseDetector; random init instead of ImageNet.
    cfg = Config.fromfile('configs/maxq/faster-rcnn_r50-maxq-2of8_fpn_1x_coco.py')
    arch = cfg.model.architecture
    arch.backbone.init_cfg = None
    torch.manual_seed(0)
    model = MODELS.build(dict(type='SparseDetector', architecture=arch,
                              sparsity=dict(method=method, n=args.n, m=args.m)))
    model.init_weights()
    model.to(args.device).train()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9))
    if method == 'srste':
        layers = model.sparse_layers()

        def decay(optimizer, args, kwargs):  # what SRSTEDecayHook registers
            for conv in layers:
                srste_decay_(conv.weight, conv.mask, 2e-4)

        optim.optimizer.register_step_pre_hook(decay)
    return model, optim


def one_iteration(model, optim, data, preserve, device):
    """Seconds of (mask refresh, train_step) of one training iteration."""
    start = time.perf_counter()
    model.set_preserve_rate(preserve)  # what SparsityScheduleHook does before each iteration
    sync(device)
    refreshed = time.perf_counter()
    model.train_step(data, optim)
    sync(device)
    return refreshed - start, time.perf_counter() - refreshed


def sync(device):
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = demo_mm_inputs(args.batch, [(3, args.size, args.size)] * args.batch, num_items=[4] *
                          args.batch, num_classes=80, device=args.device)
    data = dict(inputs=[d for d in data['inputs']], data_samples=data['data_samples'])
    runs = {method: build(method, args) for method in METHODS}
    times = {method: [] for method in METHODS}
    for i in range(args.warmup + args.iters):
        # Rotate the order every round so no method always runs first.
        for method in METHODS[i % 3:] + METHODS[:i % 3]:
            model, optim = runs[method]
            sync(args.device)
            refresh, step = one_iteration(model, optim, data, args.preserve, args.device)
            if i >= args.warmup:
                times[method].append((refresh + step, refresh, step))
    med = {method: [statistics.median(t[j] for t in times[method]) for j in range(3)]
           for method in METHODS}
    dense = med['dense'][0]
    print(f'Faster R-CNN R50-FPN, {args.batch}x{args.size}x{args.size}, {args.n}:{args.m}, '
          f'preserve {args.preserve}, device {args.device}, threads {torch.get_num_threads()}, '
          f'{args.iters} timed iterations per method (medians)')
    print('The train_step of each model differs a little by its own proposals (random init, '
          'different masks); the mask refresh is the cost sparsity adds on top.')
    for method in METHODS:
        total, refresh, step = med[method]
        print(f'{method:>6}: {total * 1000:8.1f} ms/iter = refresh {refresh * 1000:6.1f} ms + '
              f'train_step {step * 1000:7.1f} ms   {total / dense:5.3f}x dense   '
              f'(refresh = {refresh / dense:5.1%} of the dense iteration)')


if __name__ == '__main__':
    main()
