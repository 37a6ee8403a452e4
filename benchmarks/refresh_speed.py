"""The whole-model mask refresh of a sparsified backbone: eager vs CUDA graph, fp32 vs autocast.

Builds MMDetection's ResNet-50 backbone (``base_channels=--width``; random init, fixed seed),
makes every N:M-eligible conv MaxQ sparse with :func:`mmdet_maxq.models.sparsify` (the stem
stays dense) at preserve rate ``--preserve``, and times :func:`mmdet_maxq.models.refresh_masks`
(every mask recomputed at once, as before each training forward):

- ``eager``: the packed computation op by op (on the CPU: the per-conv selections);
- ``graph``: the same model sparsified with ``cuda_graph=True``, the refresh replayed from a
  CUDA graph (CUDA only);
- each also under ``torch.autocast('cuda', dtype=torch.float16)``, as inside an ``--amp``
  forward (CUDA only);
- ``reference``: the sort-based, spec-literal masks of the same weights
  (``tests/sparsity/reference.py``), one conv after the other.

Timed round robin (medians; CUDA events on the GPU). Also printed per form: the ATen ops one
refresh dispatches (a ``TorchDispatchMode`` counter: on a GPU each is a launch or host work),
whether every mask equals the reference's (``torch.equal``), and on CUDA the device memory:
``persistent`` (allocated after the first refresh minus before it: the cached layout, static
buffers and graph outputs kept between iterations; ``reserved`` adds the caching allocator's
and the graph's private pool) and ``peak`` (the most allocated during one refresh on top of
what was allocated before it).

Swin-T's refresh covers its 51 Linear layers (``SparseLinear``).

``--device cpu`` is a dry run: ``--width 16``, eager fp32 and the reference only, a few
repeats; it finishes in seconds.

Examples::

    python benchmarks/refresh_speed.py --device cuda
    python benchmarks/refresh_speed.py --device cpu
"""
import argparse
import logging
import os
import sys
import warnings
from contextlib import nullcontext

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mmdet_maxq.models as sparse_models  # noqa: E402
from benchmarks.timing import count_ops, median, median_ms_round_robin  # noqa: E402
from tests.sparsity.reference import reference_maxq_mask  # noqa: E402


class Wrapper(nn.Module):
    """A backbone under ``backbone.`` (the default ``layers`` pattern of the settings)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone


def build(name, args, cuda_graph):
    import mmdet.models  # noqa: F401 (registers)
    from mmdet.registry import MODELS
    torch.manual_seed(0)
    if name == 'resnet50':
        cfg = dict(type='ResNet', depth=50, base_channels=args.width)
    else:
        cfg = dict(type='SwinTransformer', embed_dims=96, depths=(2, 2, 6, 2),
                   num_heads=(3, 6, 12, 24), window_size=7)
    model = Wrapper(MODELS.build(cfg))
    settings = sparse_models.SparsitySettings(method='maxq', n=args.n, m=args.m,
                                              cuda_graph=cuda_graph)
    sparse_models.sparsify(model, settings)
    sparse_models.set_preserve_rate(model, args.preserve)
    return model.to(args.device).train()


def sparse_layers(model):
    return [layer for _, layer in sparse_models.sparse_layers(model)]


def reference_masks(model, args):
    masks = []
    for layer in sparse_layers(model):
        w = layer.weight.detach()
        w4 = w[:, :, None, None] if w.dim() == 2 else w
        masks.append(reference_maxq_mask(w4, args.n, args.m, preserve=args.preserve)
                     .reshape(w.shape))
    return masks


def memory(model, autocast, args):
    """(persistent, reserved, peak) MiB of the refresh of a model not refreshed before."""
    mib = 2.0**20
    torch.cuda.synchronize()
    base, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    with autocast():
        sparse_models.refresh_masks(model)
    torch.cuda.synchronize()
    persistent = torch.cuda.memory_allocated() - base
    reserved = torch.cuda.memory_reserved() - reserved
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with autocast():
        sparse_models.refresh_masks(model)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    return persistent / mib, reserved / mib, peak / mib


def run_model(name, args) -> bool:
    """Measure one backbone; returns whether every form's masks equal the reference's."""
    cuda = args.device == 'cuda'
    models = {'eager': build(name, args, cuda_graph=False)}
    if cuda:
        models['graph'] = build(name, args, cuda_graph=True)
    layers = sparse_layers(models['eager'])
    numel = sum(layer.weight.numel() for layer in layers)
    print(f'== {name}: {len(layers)} sparse layers, {numel / 1e6:.1f} M weights, '
          f'{args.n}:{args.m}, preserve {args.preserve} ==', flush=True)

    def fp16():
        return torch.autocast('cuda', dtype=torch.float16)

    forms = {}
    for kind, model in models.items():
        forms[f'{kind} fp32'] = (model, nullcontext)
        if cuda:
            forms[f'{kind} autocast'] = (model, fp16)
    mem = {}
    if cuda:
        for kind, model in models.items():  # the first refresh of each model: its cache
            mem[kind] = memory(model, nullcontext, args)
    fns = {form: (lambda m=m, c=c: _refresh(m, c)) for form, (m, c) in forms.items()}
    fns['reference'] = lambda: reference_masks(models['eager'], args)
    times = median_ms_round_robin(fns, args.device, args.warmup, args.repeats)
    want = reference_masks(models['eager'], args)
    all_same = True
    for form, (model, context) in forms.items():
        with context():
            ops = count_ops(lambda: sparse_models.refresh_masks(model))
        masks = [layer.mask for layer in sparse_layers(model)]
        same = sum(torch.equal(a, b) for a, b in zip(masks, want))
        diff = max(float((a.float() - b.float()).abs().max()) for a, b in zip(masks, want))
        all_same &= same == len(want)
        line = (f'{form:16s} {median(times[form]):8.3f} ms  {ops:5d} ATen ops  masks equal to '
                f'the reference: {same} of {len(want)} (max |diff| {diff:.2g})')
        kind = form.split()[0]
        if cuda and form.endswith('fp32'):
            persistent, reserved, peak = mem[kind]
            line += (f'  memory: persistent {persistent:.1f} MiB ({persistent * 2**20 / numel:.1f}'
                     f' B/weight), reserved +{reserved:.1f} MiB, peak {peak:.1f} MiB')
        print(line, flush=True)
    ref_ops = count_ops(lambda: reference_masks(models['eager'], args))
    print(f'{"reference":16s} {median(times["reference"]):8.3f} ms  {ref_ops:5d} ATen ops '
          f'(sort-based, conv after conv)', flush=True)
    return all_same


def _refresh(model, context):
    with context():
        sparse_models.refresh_masks(model)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        choices=['cuda', 'cpu'])
    parser.add_argument('--models', default='resnet50,swin_t')
    parser.add_argument('--n', type=int, default=2)
    parser.add_argument('--m', type=int, default=8)
    parser.add_argument('--preserve', type=float, default=0.5)
    parser.add_argument('--width', type=int, default=None,
                        help='ResNet base_channels (64, a real ResNet-50; CPU dry run 16)')
    parser.add_argument('--warmup', type=int, default=None, help='untimed rounds (5; CPU 1)')
    parser.add_argument('--repeats', type=int, default=None, help='timed rounds (20; CPU 3)')
    args = parser.parse_args()
    cpu = args.device == 'cpu'
    if not cpu and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device is available')
    args.models = [m for m in args.models.split(',') if m]
    unknown = sorted(set(args.models) - {'resnet50', 'swin_t'})
    if unknown:
        parser.error(f'--models: unknown {unknown}; choose from resnet50, swin_t')
    args.width = args.width or (16 if cpu else 64)
    args.warmup = (1 if cpu else 5) if args.warmup is None else args.warmup
    args.repeats = (3 if cpu else 20) if args.repeats is None else args.repeats
    return args


def main():
    args = parse_args()
    logging.getLogger('mmengine').setLevel(logging.WARNING)
    warnings.filterwarnings('ignore')
    device = torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU (dry run)'
    print(f'refresh speed: {device}, torch {torch.__version__}, median of {args.repeats} after '
          f'{args.warmup} warm-up rounds, {torch.get_num_threads()} CPU threads', flush=True)
    ok = True
    for name in args.models:
        ok = run_model(name, args) and ok
    if not ok:
        raise SystemExit('refresh speed: some masks differ from the sort-based reference')


if __name__ == '__main__':
    main()
