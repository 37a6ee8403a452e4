"""Training-iteration time of Faster R-CNN R50-FPN: dense vs SR-STE vs MaxQ, side by side.

Each method's model is built from the same seed from the project's COCO config
(``configs/maxq/faster-rcnn_r50-maxq-2of8_fpn_1x_coco.py``: MMDetection's R50 settings, stem
and layer1 frozen, random init instead of ImageNet) with ``sparsity.method`` set to the
method. One iteration is what the training loop and the hooks do: the preserve rate set by
``SparsityScheduleHook``, ``train_step`` (forward with the masks recomputed from the weights,
backward, the pruned-weight decay of ``SRSTEDecayHook`` for srste and maxq, optimizer step;
``AmpOptimWrapper`` with ``--amp``). Methods are timed round robin (one iteration of each in
turn, the order rotating every round) so that machine noise hits them alike; medians are
reported with the ratio to dense. The mask refresh (every sparse conv's mask computed once,
by ``refresh_masks``, as the model's forward pre-hook does before each training forward) is
also timed on its own, outside the iteration, and reported as a share of the dense
iteration. ``--cuda-graph`` replays the refresh from a CUDA graph
(``model.sparsity.cuda_graph=True``). MMEngine's build log and framework warnings are
silenced: only the figures are printed.

Examples::

    python benchmarks/train_overhead.py --height 320 --width 320 --iters 6   # CPU
    python benchmarks/train_overhead.py --device cuda --amp                  # COCO scale
"""
import argparse
import logging
import statistics
import time
import warnings

import torch
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmengine.logging import MMLogger
from mmengine.optim import AmpOptimWrapper, OptimWrapper

import mmdet_maxq  # noqa: F401
from mmdet_maxq.cli import load_config
from mmdet_maxq.engine.hooks import SRSTEDecayHook
from mmdet_maxq.models import refresh_masks, set_preserve_rate, sparse_layers
from mmdet_maxq.utils.config_utils import model_config

METHODS = ('dense', 'srste', 'maxq')
CONFIG = 'configs/maxq/faster-rcnn_r50-maxq-2of8_fpn_1x_coco.py'


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--height', type=int, default=800, help='image height (COCO: 800)')
    parser.add_argument('--width', type=int, default=1333, help='image width (COCO: 1333)')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--iters', type=int, default=10, help='timed iterations per method')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--n', type=int, default=2)
    parser.add_argument('--m', type=int, default=8)
    parser.add_argument('--preserve', type=float, default=0.5,
                        help='preserve rate during the timed iterations (mid-schedule)')
    parser.add_argument('--amp', action='store_true', help='AmpOptimWrapper (CUDA only)')
    parser.add_argument('--threads', type=int, default=None, help='torch threads')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--cuda-graph', action='store_true',
                        help='replay the mask refresh from a CUDA graph (CUDA only)')
    args = parser.parse_args()
    if args.cuda_graph and not args.device.startswith('cuda'):
        parser.error('--cuda-graph needs --device cuda')
    if args.amp and not args.device.startswith('cuda'):
        parser.error('--amp needs --device cuda (MMEngine\'s AmpOptimWrapper is CUDA-only)')
    return args


def build(method, args):
    cfg = load_config(CONFIG)
    cfg.model.backbone.init_cfg = None
    cfg.model.sparsity = dict(method=method, n=args.n, m=args.m)
    if args.cuda_graph and method != 'dense':
        cfg.model.sparsity['cuda_graph'] = True
    torch.manual_seed(0)
    model = MODELS.build(model_config(cfg))
    model.init_weights()
    model.to(args.device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    optim = (AmpOptimWrapper(optimizer=optimizer, loss_scale='dynamic') if args.amp
             else OptimWrapper(optimizer))
    layers = [conv for _, conv in sparse_layers(model)]
    if layers:  # what SRSTEDecayHook registers (the paper's decay, MaxQ included)
        optimizer.register_step_pre_hook(SRSTEDecayHook(2e-4)._make_hook(layers))
    return model, optim


def sync(device):
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def quiet() -> None:
    """Silence MMEngine's logs below warnings and the frameworks' Python warnings."""
    MMLogger.get_instance('train_overhead', log_level='WARNING')  # the 'current' logger
    logging.getLogger('mmengine').setLevel(logging.WARNING)
    warnings.filterwarnings('ignore')


def main():
    args = parse_args()
    quiet()
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = (3, args.height, args.width)
    data = demo_mm_inputs(args.batch, [shape] * args.batch, num_items=[4] * args.batch,
                          num_classes=80, device=args.device)
    data = dict(inputs=[d for d in data['inputs']], data_samples=data['data_samples'])
    runs = {method: build(method, args) for method in METHODS}
    steps = {method: [] for method in METHODS}
    refreshes = {method: [] for method in METHODS}
    for i in range(args.warmup + args.iters):
        # Rotate the order every round so no method always runs first.
        for method in METHODS[i % 3:] + METHODS[:i % 3]:
            model, optim = runs[method]
            set_preserve_rate(model, args.preserve)
            step = timed(lambda: model.train_step(data, optim), args.device)
            refresh = timed(lambda: refresh_masks(model), args.device)
            if i >= args.warmup:
                steps[method].append(step)
                refreshes[method].append(refresh)
    device = torch.cuda.get_device_name() if args.device.startswith('cuda') else 'CPU'
    graph = ', CUDA-graph refresh' if args.cuda_graph else ''
    print(f'Faster R-CNN R50-FPN, batch {args.batch} x {args.height}x{args.width}, '
          f'{args.n}:{args.m}, preserve {args.preserve}, {device}, '
          f'{"AMP" if args.amp else "fp32"}{graph}, threads {torch.get_num_threads()}, '
          f'{args.iters} timed iterations per method (medians)')
    print('The train_step of each model differs a little by its own proposals (random init, '
          'different masks); the mask refresh is the cost sparsity adds on top.')
    dense = statistics.median(steps['dense'])
    for method in METHODS:
        step, refresh = statistics.median(steps[method]), statistics.median(refreshes[method])
        print(f'{method:>6}: {step * 1000:8.1f} ms/iter  {step / dense:5.3f}x dense   mask '
              f'refresh alone {refresh * 1000:6.1f} ms = {refresh / dense:5.1%} of the dense '
              'iteration')


if __name__ == '__main__':
    main()
