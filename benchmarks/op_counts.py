"""The per-iteration GPU costs of sparsity, measured without a GPU: ops and bytes on ``meta``.

Every ATen op dispatched is a kernel launch plus host work on a GPU, and every tensor kept
alive is GPU memory. On ``meta`` tensors (shapes without data) both can be counted exactly:

- the ATen ops of one whole-model mask refresh (ResNet-50 at 2:8: 52 convs; Swin-T at 2:4: 51
  linear layers), the device (packed) path;
- the bytes the refresh keeps alive between iterations (``gc`` over live tensors, parameters
  and mask buffers excluded) and the peak of its temporaries;
- the ATen ops of one forward + backward of a sparse ResNet-50 classifier, with and without
  gradient checkpointing (``backbone.with_cp``), and of its forward alone;
- the size of a sparse R50 Mask R-CNN's model state as a checkpoint holds it (``torch.save``),
  and the bytes that one mask per sparse weight would add.

Example::

    python benchmarks/op_counts.py
"""
import io
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mmdet_maxq  # noqa: E402,F401  (registers the sparse models)
from benchmarks.timing import count_ops  # noqa: E402
from mmdet_maxq.models import sparsify  # noqa: E402
from mmdet_maxq.models import SparsitySettings, refresh_masks, sparse_layers  # noqa: E402
from tests.models.test_refresh_memory import PeakOfNewStorages, live_storages  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Backbone(torch.nn.Module):

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return self.backbone(x)


def refresh_costs(name, backbone, n, m):
    model = Backbone(backbone)
    sparsify(model, SparsitySettings(n=n, m=m))
    model.to('meta')
    layers = [layer for _, layer in sparse_layers(model)]
    weights = sum(layer.weight.numel() for layer in layers)

    def state():
        return live_storages(exclude=list(model.parameters()) + list(model.buffers()))

    before = state()
    refresh_masks(model, 0.5)  # builds the layout
    ops = count_ops(lambda: refresh_masks(model, 0.5))
    with PeakOfNewStorages() as peak:
        refresh_masks(model, 0.5)
    kept = sum(b for key, b in state().items() if key not in before)
    print(f'{name}: {len(layers)} sparse layers, {weights / 1e6:.1f} M weights, {n}:{m}: '
          f'refresh {ops} ATen ops; kept between refreshes {kept / 2**20:.2f} MiB '
          f'({kept / weights:.3f} B/weight); refresh peak {peak.peak / 2**20:.0f} MiB '
          f'({peak.peak / weights:.1f} B/weight)')


def checkpointing_costs():
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    counts = {}
    for with_cp in (False, True):
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            model = MODELS.build(dict(
                type='SparseClassifier', classifier='ImageClassifier',
                sparsity=dict(method='maxq', n=2, m=8),
                backbone=dict(type='ResNet', depth=50, with_cp=with_cp),
                neck=dict(type='GlobalAveragePooling'),
                head=dict(type='LinearClsHead', num_classes=10, in_channels=2048)))
        model.to('meta').train()
        x = torch.randn(2, 3, 64, 64, device='meta')
        model(x, mode='tensor').sum().backward()  # layouts, first-forward check
        model.zero_grad()
        counts[with_cp] = count_ops(lambda: model(x, mode='tensor').sum().backward())
        counts[(with_cp, 'forward')] = count_ops(lambda: model(x, mode='tensor'))
    print(f'R50 classifier 2:8, forward + backward: {counts[False]} ATen ops; with_cp=True '
          f'{counts[True]} (+{counts[True] - counts[False]}; one forward is '
          f'{counts[(False, "forward")]})')


def checkpoint_size():
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    cfg = Config.fromfile(os.path.join(REPO, 'configs/maxq/mask-rcnn_r50-maxq-2of8_fpn_1x_coco.py'))
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    buffer = io.BytesIO()
    torch.save(dict(state_dict=model.state_dict()), buffer)
    masks = sum(layer.weight.numel() * layer.weight.element_size()
                for _, layer in sparse_layers(model))
    print(f'R50 Mask R-CNN 2:8 model state: {buffer.tell() / 2**20:.1f} MiB, '
          f'{len(model.state_dict())} keys; one mask per sparse weight would add '
          f'{masks / 2**20:.1f} MiB')


def main():
    from mmdet.models.backbones import ResNet, SwinTransformer
    torch.manual_seed(0)
    print(f'torch {torch.__version__}, counted on meta tensors')
    refresh_costs('ResNet-50', ResNet(depth=50), 2, 8)
    refresh_costs('Swin-T', SwinTransformer(), 2, 4)
    checkpointing_costs()
    checkpoint_size()


if __name__ == '__main__':
    main()
