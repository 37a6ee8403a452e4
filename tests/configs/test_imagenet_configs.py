"""configs/imagenet/: the paper's sparse ImageNet recipe on mmpretrain's own bases."""
import glob
import os.path as osp
import re

import pytest
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS

import mmdet_maxq  # noqa: F401
from mmdet_maxq.models import SparseConv2d, sparse_layers, sparsity_settings
from ..conftest import REPO

CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', 'imagenet', '*.py')))
NAME = re.compile(r'^(?P<arch>resnet(?P<depth>\d+)|mobilenet-v2)-(?P<method>maxq|srste)-'
                  r'(?P<n>\d+)of(?P<m>\d+)_8xb32_in1k\.py$')
EXPECTED = {'resnet50-maxq-2of4', 'resnet50-maxq-1of4', 'resnet50-maxq-2of8',
            'resnet50-maxq-1of16', 'resnet18-maxq-2of4', 'resnet34-maxq-2of4',
            'mobilenet-v2-maxq-2of4', 'mobilenet-v2-maxq-1of4', 'resnet50-srste-2of4'}
# backbone convs: all, of which sparse (the stem and, for MobileNetV2, the depthwise stay dense)
CONVS = {'18': (20, 19), '34': (36, 35), '50': (53, 52), 'mobilenet-v2': (52, 34)}


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    """Build from mmpretrain's registries, leaving the default scope as it was afterwards."""
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield


def test_the_papers_configs_are_all_there():
    assert {osp.basename(p).split('_8xb32')[0] for p in CONFIGS} == EXPECTED


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_recipe_and_model(path, one_thread):
    hit = NAME.match(osp.basename(path))
    assert hit, osp.basename(path)
    cfg = Config.fromfile(path)
    assert cfg.default_scope == 'mmpretrain'
    assert 'mmdet_maxq' in cfg.custom_imports.imports
    assert cfg.train_cfg.max_epochs == 120
    opt = cfg.optim_wrapper
    assert opt.type == 'AmpOptimWrapper'
    assert (opt.optimizer.type, opt.optimizer.lr, opt.optimizer.momentum,
            opt.optimizer.weight_decay, opt.optimizer.nesterov) == ('SGD', 0.1, 0.9, 1e-4, False)
    assert opt.paramwise_cfg.norm_decay_mult == 0.0
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 256
    assert [s.type for s in cfg.param_scheduler] == ['CosineAnnealingLR']  # no warm-up
    assert cfg.param_scheduler[0].T_max == 120
    assert cfg.model.head.loss.type == 'LabelSmoothLoss'
    assert cfg.model.head.loss.label_smooth_val == 0.1
    hooks = {h.type: h for h in cfg.custom_hooks}
    schedule = hooks['SparsityScheduleHook']
    assert (schedule.kind, schedule.start, schedule.end, schedule.by_epoch) == \
        ('linear', 0, 30, True)
    assert hooks['SRSTEDecayHook'].decay == 2e-4
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'ImageClassifier'
    settings = sparsity_settings(model)
    n, m = int(hit['n']), int(hit['m'])
    assert (settings.method, settings.n, settings.m) == (hit['method'], n, m)
    convs = {k: v for k, v in model.backbone.named_modules() if isinstance(v, nn.Conv2d)}
    total, sparse = CONVS[hit['depth'] or 'mobilenet-v2']
    assert (len(convs), len(sparse_layers(model))) == (total, sparse)
    assert isinstance(model.head.fc, nn.Linear)
    for name, conv in convs.items():
        if isinstance(conv, SparseConv2d):
            assert (conv.n, conv.m, conv.method) == (n, m, hit['method'])
            assert conv.groups == 1
        else:  # the stem, depthwise convs
            assert conv.in_channels // conv.groups in (1, 3), name
    if hit['depth']:
        assert isinstance(model.backbone.layer2[0].downsample[0], SparseConv2d)
