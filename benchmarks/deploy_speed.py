"""Deployed 2:4 backbones: dense kernels vs semi-structured sparse ones, side by side in one run.

For each backbone (ResNet-50 from MMDetection's registry, Swin-T from MMDetection's, DeiT-S
from mmpretrain's; or torchvision's ResNet-50, Swin-T and a DeiT-S-sized ViT with ``--source
torchvision``, which needs no OpenMMLab), random init from a fixed seed: every N:M-eligible
weight (Linear layers and convs with ``in_channels % 4 == 0``) is folded to an exact 2:4
pattern with ``mmdet_maxq.sparsity.nm_mask``, as ``tools/deploy.py`` leaves a trained model.
That folded model is then run in these forms, in float16 and bfloat16, at each batch size,
timed round robin with CUDA events (median of ``--iters`` after ``--warmup``):

- ``dense``: the folded model as it is (its zeros stored, dense kernels; ResNet in
  ``channels_last``);
- ``as-linear`` (ResNet only): its 1x1 convs as ``F.linear`` over channels
  (:class:`mmdet_maxq.sparsity.semi_structured.Conv1x1AsLinear`), dense weights: what the
  reformulation alone costs;
- ``2:4 <backend>``: the eligible Linear / 1x1-conv weights as semi-structured tensors
  (:func:`mmdet_maxq.sparsity.semi_structured.to_semi_structured`), per backend (cuSPARSELt,
  CUTLASS).

Printed per backbone: which layers were converted and why the others stayed dense; per dtype
and batch: each form's median ms, its speed relative to ``dense``, and the largest absolute
difference of its outputs from ``dense`` (also relative to the largest |output|).

``--device cpu`` is a dry run: small images, float32, batch 1, a few iterations, the dense
forms only; it still folds, reformulates and checks eligibility, and prints the one-line
refusal of the 2:4 path (which needs CUDA, compute capability >= 8.0).

Examples::

    python benchmarks/deploy_speed.py --device cuda
    python benchmarks/deploy_speed.py --device cuda --source torchvision   # no OpenMMLab
    python benchmarks/deploy_speed.py --device cpu                         # dry run
"""
import argparse
import copy
import os
import sys
import traceback
import warnings
from collections import Counter

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import median, median_ms_round_robin  # noqa: E402
from mmdet_maxq.sparsity import nm_mask  # noqa: E402
from mmdet_maxq.sparsity.semi_structured import (SHAPE_MULTIPLES, SemiStructuredError,  # noqa: E402
                                                 convs_as_linear, plan_semi_structured,
                                                 to_semi_structured)

MODELS = ('resnet50', 'swin_t', 'deit_s')
DTYPES = {'fp16': torch.float16, 'bf16': torch.bfloat16, 'fp32': torch.float32}


def build_openmmlab(name: str, size: int) -> nn.Module:
    """The backbone from MMDetection's (ResNet-50, Swin-T) or mmpretrain's (DeiT-S) registry."""
    if name == 'deit_s':
        import mmpretrain.models  # noqa: F401 (registers)
        from mmpretrain.registry import MODELS as PRETRAIN
        return PRETRAIN.build(dict(type='VisionTransformer', arch='deit-small', img_size=size,
                                   patch_size=16))
    import mmdet.models  # noqa: F401 (registers)
    from mmdet.registry import MODELS as DET
    if name == 'resnet50':
        return DET.build(dict(type='ResNet', depth=50, out_indices=(0, 1, 2, 3)))
    return DET.build(dict(type='SwinTransformer', embed_dims=96, depths=(2, 2, 6, 2),
                          num_heads=(3, 6, 12, 24), window_size=7, out_indices=(0, 1, 2, 3)))


def build_torchvision(name: str, size: int) -> nn.Module:
    """torchvision's ResNet-50 / Swin-T features, and a ViT of DeiT-S's size (ViT-S/16)."""
    import torchvision.models as tv
    if name == 'resnet50':
        return nn.Sequential(*list(tv.resnet50().children())[:-2])
    if name == 'swin_t':
        return tv.swin_t().features
    vit = tv.VisionTransformer(image_size=size, patch_size=16, num_layers=12, num_heads=6,
                               hidden_dim=384, mlp_dim=1536)
    vit.heads = nn.Identity()
    return vit


@torch.no_grad()
def fold_2_4(model: nn.Module) -> int:
    """Fold a 2:4 mask into every Linear / plain conv weight with ``in % 4 == 0``; count."""
    folded = 0
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d) and mod.groups == 1 or isinstance(mod, nn.Linear):
            if mod.weight.shape[1] % 4 == 0:
                mod.weight.mul_(nm_mask(mod.weight, 2, 4))
                folded += 1
    return folded


def flat_outputs(out):
    """Every tensor of a (nested) model output, in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flat_outputs(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in flat_outputs(o)]
    return []


def max_difference(outs, ref):
    """(max |out - ref|, that divided by max |ref|) over all output tensors."""
    diff = max(float((a.float() - b.float()).abs().max()) for a, b in zip(outs, ref))
    scale = max(float(b.float().abs().max()) for b in ref)
    return diff, diff / max(scale, 1e-30)


def reasons(report_dense) -> str:
    counts = Counter(reason for reason in report_dense.values())
    return '; '.join(f'{n}x {reason}' for reason, n in counts.most_common()) or 'none'


def eligibility_preview(model: nn.Module) -> str:
    """How many candidate weights would convert in float16, per backend."""
    half = copy.deepcopy(model).half()
    parts = []
    for backend in SHAPE_MULTIPLES:
        plan = plan_semi_structured(half, backend)
        dense = f' (dense: {reasons(plan.dense)})' if plan.dense else ''
        parts.append(f'{backend} {len(plan.converted)} of '
                     f'{len(plan.converted) + len(plan.dense)}{dense}')
    return ', '.join(parts)


def forms_of(name, folded, linear, args, dtype_name):
    """The forms of one folded backbone on the device in a dtype: name -> module.

    Args:
        name (str): The backbone.
        folded (nn.Module): The folded backbone.
        linear (nn.Module or None): The same with its 1x1 convs as ``F.linear`` (ResNet).
        args: The command line.
        dtype_name (str): A key of ``DTYPES``.
    """
    channels_last = name == 'resnet50'

    def place(model):
        model = copy.deepcopy(model).to(args.device, DTYPES[dtype_name])
        model.eval()  # (MMDetection's ResNet.train returns None: no chaining)
        return model.to(memory_format=torch.channels_last) if channels_last else model

    forms = {'dense': place(folded)}
    if linear is not None:
        forms['as-linear'] = place(linear)
    if args.device == 'cpu':
        try:
            to_semi_structured(place(linear if linear is not None else folded))
        except SemiStructuredError as err:
            print(f'  {dtype_name} 2:4 path skipped: {err}')
        return forms
    for backend in args.backends:
        sparse = place(linear if linear is not None else folded)
        try:
            report = to_semi_structured(sparse, backend=backend)
        except RuntimeError as err:  # e.g. a backend this GPU or build lacks: say so, go on
            print(f'  {dtype_name} 2:4 {backend}: conversion failed: {first_line(err)}')
            continue
        print(f'  {dtype_name} 2:4 {backend}: {len(report.converted)} weights semi-structured, '
              f'{len(report.dense)} left dense ({reasons(report.dense)})')
        forms[f'2:4 {backend}'] = sparse
    return forms


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f'{type(err).__name__}: {text.splitlines()[0] if text else ""}'


@torch.no_grad()
def run_model(name, args) -> None:
    torch.manual_seed(0)
    build = build_openmmlab if args.source == 'openmmlab' else build_torchvision
    model = build(name, args.size)
    model.eval()
    folded = fold_2_4(model)
    params = sum(p.numel() for p in model.parameters())
    print(f'== {name} ({args.source}): {params / 1e6:.1f} M parameters, {folded} weights '
          f'folded to 2:4, {args.size}x{args.size} px ==', flush=True)
    linear = None
    if name == 'resnet50':
        linear = copy.deepcopy(model)
        print(f'  1x1 convs as F.linear: {len(convs_as_linear(linear))}')
    print(f'  weights eligible in float16 by shape and 2:4 pattern: '
          f'{eligibility_preview(linear if linear is not None else model)}', flush=True)
    for dtype_name in args.dtypes:
        forms = forms_of(name, model, linear, args, dtype_name)
        for batch in args.batches:
            x = torch.randn(batch, 3, args.size, args.size, generator=torch.Generator()
                            .manual_seed(batch)).to(args.device, DTYPES[dtype_name])
            if name == 'resnet50':
                x = x.contiguous(memory_format=torch.channels_last)
            outputs = {}
            for form, module in forms.items():
                try:
                    outputs[form] = flat_outputs(module(x))
                except RuntimeError as err:  # a 2:4 kernel refused: report it, time the rest
                    if form == 'dense':
                        raise
                    print(f'  {dtype_name} batch {batch}: {form} forward failed: '
                          f'{first_line(err)}')
            times = median_ms_round_robin({f: (lambda m=forms[f]: m(x)) for f in outputs},
                                          args.device, args.warmup, args.iters)
            dense = median(times['dense'])
            cells = []
            for form in outputs:
                ms = median(times[form])
                diff, rel = max_difference(outputs[form], outputs['dense'])
                cells.append(f'{form} {ms:.3f} ms ({dense / ms:.2f}x, max|diff| {diff:.2e}, '
                             f'rel {rel:.1e})')
            print(f'  {dtype_name} batch {batch}: ' + ' | '.join(cells), flush=True)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        choices=['cuda', 'cpu'])
    parser.add_argument('--source', default='openmmlab', choices=['openmmlab', 'torchvision'])
    parser.add_argument('--models', default=','.join(MODELS),
                        help=f'comma-separated, of {MODELS}')
    parser.add_argument('--dtypes', default=None, help='comma-separated: fp16,bf16 (CUDA '
                        'default) or fp32 (the CPU dry run)')
    parser.add_argument('--batches', default=None, help='comma-separated (default 1,8; CPU 1)')
    parser.add_argument('--size', type=int, default=None, help='image side (224; CPU 64)')
    parser.add_argument('--backends', default='cusparselt,cutlass',
                        help=f'comma-separated, of {tuple(SHAPE_MULTIPLES)}')
    parser.add_argument('--warmup', type=int, default=None, help='untimed rounds (10; CPU 1)')
    parser.add_argument('--iters', type=int, default=None, help='timed rounds (50; CPU 2)')
    args = parser.parse_args()
    cpu = args.device == 'cpu'
    if not cpu and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device is available')
    args.models = [m for m in args.models.split(',') if m]
    args.dtypes = (args.dtypes or ('fp32' if cpu else 'fp16,bf16')).split(',')
    args.batches = [int(b) for b in (args.batches or ('1' if cpu else '1,8')).split(',')]
    args.backends = [b for b in args.backends.split(',') if b]
    for value, known, flag in ((args.models, MODELS, '--models'),
                               (args.dtypes, tuple(DTYPES), '--dtypes'),
                               (args.backends, tuple(SHAPE_MULTIPLES), '--backends')):
        unknown = sorted(set(value) - set(known))
        if unknown:
            parser.error(f'{flag}: unknown {unknown}; choose from {known}')
    args.size = args.size or (64 if cpu else 224)
    args.warmup = 1 if cpu and args.warmup is None else (10 if args.warmup is None
                                                         else args.warmup)
    args.iters = 2 if cpu and args.iters is None else (50 if args.iters is None else args.iters)
    return args


def main():
    args = parse_args()
    warnings.filterwarnings('ignore', message='.*SparseSemiStructuredTensor.*prototype.*')
    device = torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU (dry run)'
    print(f'deploy speed: {device}, torch {torch.__version__}, {args.source} backbones '
          f'{args.models}, dtypes {args.dtypes}, batches {args.batches}, backends '
          f'{args.backends}, median of {args.iters} after {args.warmup} warm-up rounds, '
          f'{torch.get_num_threads()} CPU threads', flush=True)
    failed = []
    for name in args.models:
        try:
            run_model(name, args)
        except Exception:  # report and go on to the next backbone; the exit code says it
            traceback.print_exc()
            print(f'  {name}: FAILED (traceback above)', flush=True)
            failed.append(name)
    if failed:
        raise SystemExit(f'deploy speed: failed for {failed}')


if __name__ == '__main__':
    main()
