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
from mmdet_maxq.models import SparseConv2d, SparseLinear, sparse_layers, sparsity_settings
from ..conftest import REPO

# The transformer-family configs keep mmpretrain's own recipes (checked below): the sparse
# convs and linear layers of each backbone, the epochs, and the base config's weight decay.
TRANSFORMER_FAMILY = {
    'swin-tiny-maxq-2of4_16xb64_in1k.py': (0, 51, 300, 0.05),
    'convnext-tiny-maxq-2of4_32xb128_in1k.py': (3, 36, 300, 0.05),
    'deit-small-maxq-2of4_4xb256_in1k.py': (0, 48, 300, 0.05),
}
CONFIGS = sorted(p for p in glob.glob(osp.join(REPO, 'configs', 'imagenet', '*.py'))
                 if osp.basename(p) not in TRANSFORMER_FAMILY)
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


@pytest.mark.parametrize('name', sorted(TRANSFORMER_FAMILY))
def test_transformer_family_recipe_and_model(name, one_thread):
    convs, linears, epochs, weight_decay = TRANSFORMER_FAMILY[name]
    path = osp.join(REPO, 'configs', 'imagenet', name)
    cfg = Config.fromfile(path)
    assert cfg.default_scope == 'mmpretrain'
    assert 'mmdet_maxq' in cfg.custom_imports.imports
    # mmpretrain's recipe, untouched: AdamW, its epochs, warm-up then cosine.
    assert cfg.train_cfg.max_epochs == epochs
    assert (cfg.optim_wrapper.optimizer.type, cfg.optim_wrapper.optimizer.weight_decay) == \
        ('AdamW', weight_decay)
    assert [s.type for s in cfg.param_scheduler] == ['LinearLR', 'CosineAnnealingLR']
    hooks = {h.type: h for h in cfg.custom_hooks}
    schedule = hooks['SparsityScheduleHook']
    assert (schedule.kind, schedule.start, schedule.end, schedule.by_epoch) == \
        ('linear', 0, epochs // 4, True)
    assert (hooks['SRSTEDecayHook'].decay, hooks['SRSTEDecayHook'].mode) == \
        (2 * weight_decay, 'decoupled')
    assert {'SparsityLoggerHook', 'RandomStateHook'} <= set(hooks)
    if name.startswith('convnext'):
        assert 'EMAHook' in hooks  # the recipe's own
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'ImageClassifier'
    layers = sparse_layers(model)
    assert (sum(isinstance(mod, SparseConv2d) for _, mod in layers),
            sum(isinstance(mod, SparseLinear) for _, mod in layers)) == (convs, linears)
    assert all(name.startswith('backbone.') for name, _ in layers)
    assert all((mod.n, mod.m, mod.method) == (2, 4, 'maxq') for _, mod in layers)
    dense = model.sparsify_report.dense
    assert all('not divisible by M=4' in reason for reason in dense.values())
    if name.startswith('swin'):
        assert isinstance(model.backbone.stages[0].downsample.reduction, SparseLinear)
        assert list(dense) == ['backbone.patch_embed.projection']
    elif name.startswith('convnext'):
        assert isinstance(model.backbone.downsample_layers[1][1], SparseConv2d)
        assert set(dense) == {'backbone.downsample_layers.0.0'} | {
            f'backbone.stages.{i}.{j}.depthwise_conv'
            for i, depth in enumerate((3, 3, 9, 3)) for j in range(depth)}
    else:
        assert list(dense) == ['backbone.patch_embed.projection']
