import glob
import os.path as osp
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmdet.models.detectors import MaskRCNN
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmengine.config import Config
from mmengine.runner import load_checkpoint, save_checkpoint

import mmdet_maxq  # noqa: F401
from mmdet_maxq.models import SparseConv2d, sparse_layers, sparsity_settings
from ..conftest import REPO

MAXQ = osp.join(REPO, 'configs/synthetic/mask-rcnn_r18-tiny-maxq-2of8_fpn_synthetic.py')
PLAIN = osp.join(REPO, 'configs/synthetic/mask-rcnn_r18-tiny_fpn_synthetic.py')
SPARSE_SYNTHETIC_CONFIGS = sorted(
    p for p in glob.glob(osp.join(REPO, 'configs/synthetic/*.py'))
    if Config.fromfile(p).model.get('type') == 'SparseDetector')


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


def test_the_sparse_model_is_the_detector_itself():
    model = _build()
    assert type(model) is MaskRCNN
    assert sparsity_settings(model).n == 2 and sparsity_settings(model).m == 8
    # MMDetection's own attributes and methods, where its hooks and APIs look for them.
    assert model.backbone is not None and model.roi_head is not None
    assert model.data_preprocessor is not None


def test_default_selection_is_every_eligible_backbone_conv():
    model = _build()
    backbone_convs = {n: m for n, m in model.named_modules()
                      if isinstance(m, nn.Conv2d) and n.startswith('backbone.')}
    sparse = {n for n, m in backbone_convs.items() if isinstance(m, SparseConv2d)}
    eligible = {n for n, m in backbone_convs.items() if m.weight.shape[1] % 8 == 0}
    assert sparse == eligible and len(sparse) == 19
    assert model.sparsify_report.dense == {
        'backbone.conv1': '3 input channels not divisible by M=8'}
    assert all(not isinstance(m, SparseConv2d) for n, m in model.named_modules()
               if not n.startswith('backbone.'))
    assert all(conv.layer_name == name for name, conv in sparse_layers(model))


def test_patterns_can_include_the_neck_and_exclude():
    model = _build(layers=['backbone.*', 'neck.*'], exclude=['backbone.layer4.*'])
    names = {n for n, _ in sparse_layers(model)}
    assert any(n.startswith('neck.') for n in names)
    assert not any(n.startswith('backbone.layer4') for n in names)
    assert model.sparsify_report.dense['backbone.layer4.0.conv1'] == 'excluded'


def test_loss_predict_tensor_modes():
    model = _build()
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
    assert sparse_layers(model) == []
    assert sparsity_settings(model).method == 'dense'
    assert len(model.sparsify_report.sparse) == 19


def test_checkpoint_keys_are_the_detectors_own(tmp_path):
    model = _build()
    plain = MODELS.build(Config.fromfile(PLAIN).model)
    assert sparse_layers(model)
    assert set(model.state_dict()) == set(plain.state_dict())


def test_plain_detector_checkpoint_loads_strictly_and_masks_follow(tmp_path):
    torch.manual_seed(5)
    plain = MODELS.build(Config.fromfile(PLAIN).model)
    path = str(tmp_path / 'plain.pth')
    save_checkpoint(dict(state_dict=plain.state_dict()), path)
    model = _build()
    load_checkpoint(model, path, map_location='cpu', strict=True)
    conv = model.backbone.layer1[0].conv1
    assert torch.equal(conv.weight, plain.backbone.layer1[0].conv1.weight)
    assert conv.mask_stale  # computed from the loaded weights before the next use
    # A partial checkpoint: the usual key report names what is missing, never the masks.
    state = dict(plain.state_dict())
    state.pop('roi_head.bbox_head.fc_cls.weight')
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == ['roi_head.bbox_head.fc_cls.weight']


def test_old_architecture_config_gets_a_clear_error():
    cfg = Config.fromfile(PLAIN).model
    with pytest.raises(ValueError, match='model.architecture is not a SparseDetector argument'):
        MODELS.build(dict(type='SparseDetector', architecture=cfg, sparsity=dict(n=2, m=8)))
    with pytest.raises(ValueError, match='model.detector is missing'):
        MODELS.build(dict(type='SparseDetector', sparsity=dict(n=2, m=8)))


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


@pytest.mark.parametrize('config', SPARSE_SYNTHETIC_CONFIGS, ids=osp.basename)
def test_init_detector_and_inference_on_every_sparse_config(config, tmp_path):
    from mmdet.apis import inference_detector, init_detector

    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None  # no converted checkpoint needed here
    torch.manual_seed(0)
    source = MODELS.build(cfg.model)
    path = str(tmp_path / 'model.pth')
    save_checkpoint(dict(state_dict=source.state_dict(),
                         meta=dict(dataset_meta=dict(classes=('a', 'b', 'c')))), path)
    model = init_detector(cfg, path, device='cpu')
    assert sparsity_settings(model) is not None
    layers = sparse_layers(model)
    assert (len(layers) > 0) == (cfg.model.sparsity.get('method') != 'dense')
    image = np.random.RandomState(0).randint(0, 255, (96, 120, 3), dtype=np.uint8)
    result = inference_detector(model, image)
    assert hasattr(result, 'pred_instances')
    for name, conv in layers:  # masks of the loaded weights, at rate 0
        weight = source.get_submodule(name).weight
        assert torch.equal(conv.mask, conv.compute_mask(0.0)) and torch.equal(conv.weight, weight)
