"""What `backbone.*` makes sparse in the model families the README's table lists."""
import pytest
import torch.nn as nn

from mmdet_maxq.models import SparseConv2d, SparsitySettings, sparsify
from .test_mask_refresh import Wrapped


def _sparsify(backbone, n, m):
    model = Wrapped('backbone', backbone)
    report = sparsify(model, SparsitySettings(n=n, m=m))
    return model, report


def test_resnext_grouped_convs_are_sparse_per_group():
    from mmdet.models.backbones import ResNeXt
    model, report = _sparsify(ResNeXt(depth=50, groups=32, base_width=4), 2, 4)
    grouped = model.backbone.layer1[0].conv2
    assert isinstance(grouped, SparseConv2d) and grouped.groups == 32
    assert grouped.weight.shape[1] == 4  # 128 channels / 32 groups: one block of 4 per group
    assert len(report.sparse) == 52 and list(report.dense) == ['backbone.conv1']
    # At 2:8 the 4 input channels per group of layer1's grouped convs are too few.
    _, report = _sparsify(ResNeXt(depth=50, groups=32, base_width=4), 2, 8)
    assert report.dense['backbone.layer1.0.conv2'] == '4 input channels not divisible by M=8'


@pytest.mark.parametrize('family', ['CSPDarknet', 'CSPNeXt'])
def test_csp_backbones_keep_depthwise_convs_and_the_stem_dense(family):
    from mmdet.models import backbones
    backbone = getattr(backbones, family)(deepen_factor=0.33, widen_factor=0.25,
                                          use_depthwise=True)
    model, report = _sparsify(backbone, 2, 8)
    depthwise = [name for name, mod in model.named_modules()
                 if isinstance(mod, nn.Conv2d) and mod.groups > 1]
    assert depthwise and all(name in report.dense for name in depthwise)
    stem = [name for name in report.dense if name.startswith('backbone.stem')]
    assert stem and 'not divisible by M=8' in report.dense[stem[0]]  # 3 or 12 channels
    assert report.sparse and all(
        model.get_submodule(name).weight.shape[1] % 8 == 0 for name in report.sparse)
