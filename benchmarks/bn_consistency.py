"""BN consistency of a MaxQ start from a dense backbone: each stage's output statistics against
the dense model's, before and after ``BNRecalibrationHook``'s re-estimation.

The backbone is the one of ``configs/maxq/faster-rcnn_r50-maxq-2of8-incremental_fpn_1x_coco.py``
(MMDetection's R-50 settings: ``frozen_stages=1``, ``norm_eval=True``), shrunk (``--width``,
``--size``). A random-init dense ResNet-50 stands in for the ImageNet model: its BN statistics
are estimated on the calibration images first, so that it is consistent with its data, as a
trained model is (``--residual-gamma`` sets the scale of each block's last BN, small in
trained ResNets). The same weights are then made MaxQ sparse (the config's ``n``/``m``) at the
first preserve rate of the incremental schedule (1.0 unless ``--preserve``), BN frozen with
the dense statistics ("before"), and re-estimated on the sparse forward over the calibration
images ("after", :func:`recalibrate_batch_norms`, what the hook runs). Statistics are measured
on other, held-out images: per stage, the mean and std over all elements and the error of the
per-channel means (RMS over channels, divided by the dense stage's std).

Example::

    python benchmarks/bn_consistency.py --width 16 --size 64 --batches 20
"""
import argparse
import copy
from typing import Dict, List

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS

import mmdet_maxq  # noqa: F401
from mmdet_maxq.cli import load_config
from mmdet_maxq.engine.hooks.bn_recalibration_hook import recalibrate_batch_norms
from mmdet_maxq.models import SparsitySettings, set_preserve_rate, sparse_layers, sparsify

CONFIG = 'configs/maxq/faster-rcnn_r50-maxq-2of8-incremental_fpn_1x_coco.py'


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=CONFIG, help='incremental COCO config')
    parser.add_argument('--width', type=int, default=16, help='base_channels (real R-50: 64)')
    parser.add_argument('--size', type=int, default=64, help='image side in pixels')
    parser.add_argument('--batch', type=int, default=8, help='images per batch')
    parser.add_argument('--batches', type=int, default=20, help='calibration batches')
    parser.add_argument('--preserve', type=float, default=1.0,
                        help='preserve rate of the sparse start (the schedule starts at 1)')
    parser.add_argument('--residual-gamma', type=float, default=None,
                        help="scale of each block's last BN (trained ResNets keep it small; "
                        "default: PyTorch's init, 1)")
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    return parser.parse_args()


def images(generator: torch.Generator, batch: int, size: int) -> torch.Tensor:
    """Spatially smooth random images (normalised-image scale)."""
    coarse = torch.randn(batch, 3, size // 8, size // 8, generator=generator)
    fine = torch.randn(batch, 3, size, size, generator=generator)
    return F.interpolate(coarse, size=size, mode='bilinear', align_corners=False) + 0.3 * fine


def stage_outputs(backbone, batch: torch.Tensor) -> List[torch.Tensor]:
    backbone.eval()
    with torch.no_grad():
        return list(backbone(batch))


def compare(ref: List[torch.Tensor], out: List[torch.Tensor]) -> List[Dict[str, float]]:
    rows = []
    for a, b in zip(ref, out):
        std = float(a.std())
        err = (b.mean(dim=(0, 2, 3)) - a.mean(dim=(0, 2, 3))).pow(2).mean().sqrt()
        rows.append(dict(mean=float(b.mean()), std=float(b.std()), std_ratio=float(b.std()) / std,
                         channel_mean_err=float(err) / std))
    return rows


def main():
    args = parse_args()
    torch.manual_seed(args.seed)
    cfg = load_config(args.config)
    sparsity = SparsitySettings.from_cfg(dict(cfg.model.sparsity, layers=['*']))
    backbone_cfg = copy.deepcopy(cfg.model.backbone)
    backbone_cfg.pop('init_cfg', None)
    backbone_cfg.base_channels = args.width
    dense = MODELS.build(backbone_cfg)
    if args.residual_gamma is not None:
        for block in (b for name in dense.res_layers for b in getattr(dense, name)):
            last = block.norm3 if hasattr(block, 'norm3') else block.norm2
            last.weight.data.fill_(args.residual_gamma)
    gen = torch.Generator().manual_seed(args.seed)
    calib = [images(gen, args.batch, args.size) for _ in range(args.batches)]
    held_out = torch.cat([images(gen, args.batch, args.size) for _ in range(4)])
    recalibrate_batch_norms(dense, dense, calib, args.batches)  # the "trained" dense model
    ref = stage_outputs(dense, held_out)

    sparse = copy.deepcopy(dense)
    sparsify(sparse, sparsity)
    set_preserve_rate(sparse, args.preserve)
    before = compare(ref, stage_outputs(sparse, held_out))
    recalibrate_batch_norms(sparse, sparse, calib, args.batches)
    after = compare(ref, stage_outputs(sparse, held_out))

    print(f'{args.config}: ResNet-{backbone_cfg.depth} base_channels={args.width}, '
          f'frozen_stages={backbone_cfg.frozen_stages}, norm_eval={backbone_cfg.norm_eval}; '
          f'MaxQ {sparsity.n}:{sparsity.m} on {len(sparse_layers(sparse))} convs at preserve '
          f'rate {args.preserve}; {args.batches}x{args.batch} calibration images of '
          f'{args.size} px, {held_out.shape[0]} held-out; residual BN scale '
          f'{args.residual_gamma if args.residual_gamma is not None else 1.0}')
    print('| stage | dense mean / std | before: mean / std (std ratio, channel-mean err) '
          '| after: mean / std (std ratio, channel-mean err) |')
    print('| --- | --- | --- | --- |')
    for idx, (a, b, c) in enumerate(zip(ref, before, after)):
        cells = [f'{r["mean"]:.3f} / {r["std"]:.3f} ({r["std_ratio"]:.2f}x, '
                 f'{r["channel_mean_err"]:.3f})' for r in (b, c)]
        print(f'| layer{idx + 1} | {float(a.mean()):.3f} / {float(a.std()):.3f} | '
              f'{cells[0]} | {cells[1]} |')


if __name__ == '__main__':
    main()
