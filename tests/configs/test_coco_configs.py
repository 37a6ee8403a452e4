"""Every COCO config in configs/maxq parses and builds the named detector, N:M sparse.

Models are built without ``init_weights``: the sparse ImageNet checkpoints the configs name do
not exist here, and building must not need them. All 15 R-50 detectors build in about 4 s.
"""
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
from mmdet_maxq.models import SparseConv2d, sparsity_settings
from ..conftest import REPO

CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', 'maxq', '*.py')))
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
    assert len(CONFIGS) >= 15


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
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


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_deploy_writes_a_plain_config_that_parses_back(path, tmp_path):
    cfg = Config.fromfile(path)
    plain_config(cfg).dump(str(tmp_path / 'plain.py'))
    back = Config.fromfile(str(tmp_path / 'plain.py'))
    assert back.model.type == DETECTORS[NAME.match(osp.basename(path))['detector']]
    assert back.model.backbone == cfg.model.backbone
    assert 'sparsity' not in back.model and 'detector' not in back.model
    # A plain deploy needs nothing but MMDetection: none of this package's imports or hooks.
    assert not back.get('custom_hooks')
    assert 'custom_imports' not in back
    assert back.train_dataloader == cfg.train_dataloader


def test_fcos_backbone_matches_the_sparse_imagenet_checkpoints():
    """The converted checkpoints are pytorch-style ResNets on normalised RGB input."""
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'maxq',
                                   'fcos_r50-maxq-2of8_fpn_gn-head_1x_coco.py'))
    arch = cfg.model
    assert arch.backbone.style == 'pytorch'
    assert arch.data_preprocessor.bgr_to_rgb and arch.data_preprocessor.std[0] > 1
    assert arch.bbox_head.type == 'FCOSHead'
