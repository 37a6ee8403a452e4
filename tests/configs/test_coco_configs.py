"""Every COCO config in configs/maxq parses and builds the named detector, N:M sparse.

Models are built without ``init_weights``: the sparse ImageNet checkpoints the configs name do
not exist here, and building must not need them. All 15 R-50 detectors build in about 4 s.
"""
import copy
import glob
import os.path as osp
import re

import pytest
import torch.nn as nn
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmdet_maxq  # noqa: F401
from mmdet_maxq.deploy import plain_config
from mmdet_maxq.models import SparseConv2d, SparseLinear, sparse_layers, sparsity_settings
from ..conftest import REPO

CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', 'maxq', '*.py')))
# The transformer-family configs (checked by test_transformer_family_config below): detector,
# sparse convs, sparse linear layers, the weight decay of MMDetection's AdamW recipe.
TRANSFORMER_FAMILY = {
    'mask-rcnn_swin-t-p4-w7-maxq-2of4_fpn_1x_coco.py': ('MaskRCNN', 0, 51, 0.05),
    'mask-rcnn_convnext-t-p4-w7-maxq-2of4_fpn_amp-ms-crop-3x_coco.py': ('MaskRCNN', 3, 36, 0.05),
    'dino-4scale_r50-maxq-2of4_8xb2-12e_coco.py': ('DINO', 52, 74, 1e-4),
}
R50_FPN = [p for p in CONFIGS if osp.basename(p) not in TRANSFORMER_FAMILY]
NAME = re.compile(r'^(?P<detector>[a-z-]+)_r50(?:-caffe)?-(?P<method>maxq|srste)-'
                  r'(?P<n>\d+)of(?P<m>\d+)(?P<incremental>-incremental)?_')
DETECTORS = {'faster-rcnn': 'FasterRCNN', 'mask-rcnn': 'MaskRCNN', 'retinanet': 'RetinaNet',
             'fcos': 'FCOS', 'cascade-mask-rcnn': 'CascadeRCNN'}
# ResNet-50: stem + 16 bottlenecks x 3 convs + 4 downsample convs; the 3-channel stem is the
# only conv whose input channels M in {4, 8} does not divide.
R50_CONVS, R50_ELIGIBLE = 53, 52


def test_the_expected_configs_exist():
    names = {osp.basename(path) for path in CONFIGS}
    for detector in ('retinanet_r50', 'fcos_r50', 'cascade-mask-rcnn_r50'):
        assert any(name.startswith(detector + '-maxq-2of8') for name in names), detector
    assert len(R50_FPN) >= 15
    assert set(TRANSFORMER_FAMILY) <= names


@pytest.mark.parametrize('path', R50_FPN, ids=osp.basename)
def test_config_builds_the_named_sparse_detector(path):
    hit = NAME.match(osp.basename(path))
    assert hit, f'{osp.basename(path)} does not follow DETECTOR_r50-METHOD-NofM_...'
    n, m = int(hit['n']), int(hit['m'])
    cfg = Config.fromfile(path)
    assert cfg.model.type == 'SparseDetector'
    assert cfg.model.detector == DETECTORS[hit['detector']]
    init_cfg = cfg.model.backbone.init_cfg
    hooks = {h.type: h for h in cfg.custom_hooks}
    if hit['incremental']:  # from MMDetection's dense ImageNet backbone, sparsity comes gradually
        assert init_cfg.checkpoint == 'torchvision://resnet50'
        assert hooks['SparsityScheduleHook'].end > hooks['SparsityScheduleHook'].start
    else:  # from a sparse ImageNet backbone: N:M from the first iteration
        assert init_cfg.checkpoint == cfg.sparse_imagenet_checkpoint
        assert hooks['SparsityScheduleHook'].start == hooks['SparsityScheduleHook'].end == 0
    # The paper's pruned-weight decay on every sparse config, MaxQ included.
    assert hooks['SRSTEDecayHook'].decay == 2e-4
    assert 'mmdet_maxq' in cfg.custom_imports.imports
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == DETECTORS[hit['detector']]
    settings = sparsity_settings(model)
    assert (settings.method, settings.n, settings.m) == (hit['method'], n, m)
    convs = {name: mod for name, mod in model.named_modules()
             if isinstance(mod, nn.Conv2d) and name.startswith('backbone.')}
    eligible = {name for name, mod in convs.items() if mod.weight.shape[1] % m == 0}
    assert len(convs) == R50_CONVS and len(eligible) == R50_ELIGIBLE
    for name, conv in convs.items():
        if name in eligible:
            assert isinstance(conv, SparseConv2d), name
            assert (conv.n, conv.m, conv.method) == (n, m, hit['method']), name
        else:
            assert not isinstance(conv, SparseConv2d) and name == 'backbone.conv1'
    assert not any(isinstance(mod, SparseConv2d) for name, mod in
                   model.named_modules() if not name.startswith('backbone.'))


@pytest.mark.parametrize('name', sorted(TRANSFORMER_FAMILY))
def test_transformer_family_config(name, one_thread):
    detector, convs, linears, weight_decay = TRANSFORMER_FAMILY[name]
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'maxq', name))
    assert (cfg.model.type, cfg.model.detector) == ('SparseDetector', detector)
    # MMDetection's recipe is kept: AdamW with its weight decay.
    assert (cfg.optim_wrapper.optimizer.type, cfg.optim_wrapper.optimizer.weight_decay) == \
        ('AdamW', weight_decay)
    hooks = {h.type: h for h in cfg.custom_hooks}
    assert hooks['SparsityScheduleHook'].start == hooks['SparsityScheduleHook'].end == 0
    assert (hooks['SRSTEDecayHook'].decay, hooks['SRSTEDecayHook'].mode) == \
        (2 * weight_decay, 'decoupled')
    assert 'mmdet_maxq' in cfg.custom_imports.imports
    init = cfg.model.backbone.init_cfg
    assert (init.type, init.checkpoint) == ('Pretrained', cfg.sparse_imagenet_checkpoint)
    init_default_scope('mmdet')
    before = copy.deepcopy(cfg.model)
    model = MODELS.build(cfg.model)
    assert cfg.model == before  # built from a copy: DINO writes into its bbox_head dict
    assert type(model).__name__ == detector
    layers = sparse_layers(model)
    assert (sum(isinstance(mod, SparseConv2d) for _, mod in layers),
            sum(isinstance(mod, SparseLinear) for _, mod in layers)) == (convs, linears)
    assert all((mod.n, mod.m, mod.method) == (2, 4, 'maxq') for _, mod in layers)
    if detector == 'DINO':
        names = {name for name, _ in layers}
        assert not [n for n in names if not n.startswith(('backbone.', 'encoder.', 'decoder.'))]
        assert 'decoder.layers.0.cross_attn.sampling_offsets' in names
        assert 'decoder.layers.0.self_attn.attn.out_proj' not in names  # read by MHA
    else:
        assert all(name.startswith('backbone.') for name, _ in layers)
        assert cfg.pretrained_new_keys == dict(backbone=['norm0.*', 'norm1.*', 'norm2.*'])


def _detector_type(path: str) -> str:
    name = osp.basename(path)
    if name in TRANSFORMER_FAMILY:
        return TRANSFORMER_FAMILY[name][0]
    return DETECTORS[NAME.match(name)['detector']]


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_deploy_writes_a_plain_config_that_parses_back(path, tmp_path):
    cfg = Config.fromfile(path)
    plain_config(cfg).dump(str(tmp_path / 'plain.py'))
    back = Config.fromfile(str(tmp_path / 'plain.py'))
    assert back.model.type == _detector_type(path)
    assert back.model.backbone == cfg.model.backbone
    assert 'sparsity' not in back.model and 'detector' not in back.model
    # A plain deploy needs nothing but MMDetection: none of this package's imports or hooks.
    assert not back.get('custom_hooks')
    # ConvNeXt's detector keeps MMDetection's own import of mmpretrain.models.
    assert back.get('custom_imports', {}).get('imports', []) == \
        [i for i in cfg.custom_imports.imports if i != 'mmdet_maxq']
    assert back.train_dataloader == cfg.train_dataloader


def test_fcos_backbone_matches_the_sparse_imagenet_checkpoints():
    """The converted checkpoints are pytorch-style ResNets on normalised RGB input."""
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'maxq',
                                   'fcos_r50-maxq-2of8_fpn_gn-head_1x_coco.py'))
    arch = cfg.model
    assert arch.backbone.style == 'pytorch'
    assert arch.data_preprocessor.bgr_to_rgb and arch.data_preprocessor.std[0] > 1
    assert arch.bbox_head.type == 'FCOSHead'
