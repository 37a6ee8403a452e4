"""What `backbone.*` makes sparse in the model families the README's table lists."""
import pytest
import torch
import torch.nn as nn

from mmdet_maxq.models import SparseConv2d, SparsitySettings, sparsify
from mmdet_maxq.sparsity import is_nm_sparse
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


def _backbone(family):
    if family == 'MobileNetV2':
        from mmpretrain.models.backbones import MobileNetV2
        return MobileNetV2(widen_factor=0.5)
    from mmdet.models import backbones
    if family == 'ResNeXt':
        return backbones.ResNeXt(depth=50, groups=32, base_width=4)
    return getattr(backbones, family)(deepen_factor=0.33, widen_factor=0.25, use_depthwise=True)


@pytest.mark.parametrize('family', ['ResNeXt', 'CSPDarknet', 'CSPNeXt', 'MobileNetV2'])
def test_folded_plain_backbone_gives_the_sparse_outputs(family):
    """The families without a deploy run in the tool tests: the fold (W * S at preserve 0)
    gives a plain model, exactly N:M, with the sparse model's eval outputs."""
    from mmdet_maxq.deploy import fold_sparse_model
    torch.manual_seed(0)
    model, report = _sparsify(_backbone(family), 2, 4)
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        sparse = model(x)
    plain, folded, _ = fold_sparse_model(model)
    assert folded == report.sparse and not any(
        isinstance(m, SparseConv2d) for m in plain.modules())
    assert all(is_nm_sparse(plain.get_submodule(name).weight, 2, 4) for name in folded)
    with torch.no_grad():
        for a, b in zip(plain(x), sparse):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
