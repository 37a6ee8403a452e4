import copy
import re
import os.path as osp

import pytest
import torch
import torch.nn as nn

import mmdet_maxq  # noqa: F401
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmengine.config import Config
from mmengine.runner import load_checkpoint, save_checkpoint
from mmdet_maxq.models import SparseConv2d, SparseDetector

from ..conftest import REPO

MAXQ = osp.join(REPO, 'configs/synthetic/mask-rcnn_r18-tiny-maxq-2of8_fpn_synthetic.py')


def _cfg():
    return Config.fromfile(MAXQ).model


def _build(**sparsity):
    cfg = _cfg()
    cfg.sparsity.update(sparsity)
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def _inputs(with_mask=True):
    torch.manual_seed(1)
    data = demo_mm_inputs(2, [(3, 96, 96)] * 2, num_items=[2, 2], num_classes=3,
                          with_mask=with_mask)
    return dict(inputs=list(data['inputs']), data_samples=data['data_samples'])


def test_default_selection_is_every_eligible_backbone_conv():
    model = _build()
    backbone_convs = {n: m for n, m in model.architecture.named_modules()
                      if isinstance(m, nn.Conv2d) and n.startswith('backbone.')}
    sparse = {n for n, m in backbone_convs.items() if isinstance(m, SparseConv2d)}
    eligible = {n for n, m in backbone_convs.items() if m.weight.shape[1] % 8 == 0}
    assert sparse == eligible and len(sparse) == 19
    assert model.sparsify_report.dense == {'backbone.conv1': '3 input channels not divisible by M=8'}
    # Nothing outside the backbone is touched by the default pattern.
    assert all(not isinstance(m, SparseConv2d) for n, m in model.architecture.named_modules()
               if not n.startswith('backbone.'))


def test_patterns_can_include_the_neck_and_exclude():
    model = _build(layers=['backbone.*', 'neck.*'], exclude=['backbone.layer4.*'])
    names = {n for n, _ in model.named_sparse_layers()}
    assert any(n.startswith('neck.') for n in names)
    assert not any(n.startswith('backbone.layer4') for n in names)
    assert model.sparsify_report.dense['backbone.layer4.0.conv1'] == 'excluded'


def test_loss_predict_tensor_modes_and_preprocessor():
    model = _build()
    assert model.data_preprocessor is model.architecture.data_preprocessor
    data = model.data_preprocessor(_inputs(), True)
    losses = model(**data, mode='loss')
    assert {'loss_rpn_cls', 'loss_cls', 'loss_mask'} <= set(losses)
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(_inputs(), False)
        preds = model(**data, mode='predict')
        feats = model(data['inputs'], data['data_samples'], mode='tensor')
    assert len(preds) == 2 and hasattr(preds[0], 'pred_instances')
    assert isinstance(feats, tuple)


def test_dense_method_keeps_plain_convs():
    model = _build(method='dense')
    assert model.sparse_layers() == []
    assert len(model.sparsify_report.sparse) == 19


def test_plain_detector_checkpoint_loads_with_report(tmp_path):
    plain_cfg = copy.deepcopy(_cfg().architecture)
    torch.manual_seed(5)
    plain = MODELS.build(plain_cfg)
    path = str(tmp_path / 'plain.pth')
    save_checkpoint(dict(state_dict=plain.state_dict()), path)
    model = _build()
    load_checkpoint(model, path, map_location='cpu', strict=True)
    conv = model.architecture.backbone.layer1[0].conv1
    assert torch.equal(conv.weight, plain.backbone.layer1[0].conv1.weight)
    assert conv.mask_stale  # computed from the loaded weights before the next use
    report = model.plain_checkpoint_report
    assert not report['missing'] and not report['unexpected']
    assert len(report['matched']) == len(plain.state_dict())
    assert all(k.startswith('architecture.') for k in report['matched'])


def test_checkpoint_of_other_architecture_is_refused(tmp_path):
    path = str(tmp_path / 'other.pth')
    save_checkpoint(dict(state_dict={'encoder.weight': torch.zeros(2)}), path)
    with pytest.raises(KeyError, match='matches no key'):
        load_checkpoint(_build(), path, map_location='cpu')


@pytest.mark.parametrize('sparsity, match', [
    (dict(n=9, m=8), 'model.sparsity.n / model.sparsity.m'),
    (dict(method='magnitude'), 'model.sparsity.method'),
    (dict(layers=['head.*']), "model.sparsity.layers: pattern 'head.*' matches no conv"),
    (dict(layers=['backbone.conv1']), "model.sparsity.layers: 'backbone.conv1' cannot be"),
    (dict(exclude=['nowhere.*']), 'model.sparsity.exclude'),
    (dict(tau=-1.0), 'model.sparsity.tau'),
    (dict(ratio=0.5), 'model.sparsity: unknown keys'),
])
def test_bad_sparsity_config_names_the_key(sparsity, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        _build(**sparsity)
