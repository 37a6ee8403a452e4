"""Every detector config in configs/synthetic parses and builds what its name says.

The synthetic configs inherit their shared parts (data, schedule, hooks, two-stage counts)
from ``configs/_base_``; this checks that each one still builds the detector it names, with
the method and N:M of its name and the hooks a sparse run needs. Models are built without
``init_weights`` (the converted checkpoint one of them names does not exist here).
"""
import glob
import os.path as osp
import re

import pytest
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmdet_maxq  # noqa: F401
from mmdet_maxq.models import sparse_layers, sparsity_settings
from ..conftest import REPO

CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', 'synthetic', '*.py')))
NAME = re.compile(r'^(?P<detector>[a-z0-9-]+)_(?:(?:r\d+|swin-t|convnext-t)-)?tiny'
                  r'(?:-(?P<method>maxq|srste|dense)'
                  r'(?:-(?P<n>\d+)of(?P<m>\d+))?(?:-(?P<variant>[a-z-]+))?)?_')
DETECTORS = {'faster-rcnn': 'FasterRCNN', 'mask-rcnn': 'MaskRCNN', 'retinanet': 'RetinaNet',
             'yolox': 'YOLOX', 'dino-4scale': 'DINO'}


def _detection_configs():
    """The configs whose runs use MMDetection's registries (classifier configs do not)."""
    return [p for p in CONFIGS if Config.fromfile(p).get('default_scope') == 'mmdet']


def test_the_synthetic_detectors_exist():
    names = {osp.basename(path) for path in _detection_configs()}
    assert 'mask-rcnn_r18-tiny-maxq-2of8_fpn_synthetic.py' in names  # the demo
    assert len(names) >= 7


@pytest.mark.parametrize('path', _detection_configs(), ids=osp.basename)
def test_config_builds_the_named_detector(path):
    hit = NAME.match(osp.basename(path))
    assert hit, (f'{osp.basename(path)} does not follow '
                 'DETECTOR_[rD-]tiny[-METHOD[-NofM][-VARIANT]]_...')
    cfg = Config.fromfile(path)
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == DETECTORS[hit['detector']]
    settings = sparsity_settings(model)
    hooks = {h['type']: h for h in cfg.get('custom_hooks', [])}
    if hit['method'] is None:  # the plain detector the sparse configs inherit from
        assert settings is None and not sparse_layers(model)
        return
    assert settings.method == hit['method']
    assert 'mmdet_maxq' in cfg.custom_imports.imports and 'RandomStateHook' in hooks
    convs = sparse_layers(model)
    if hit['method'] == 'dense':
        assert not convs and 'SRSTEDecayHook' not in hooks
        return
    n, m = int(hit['n']), int(hit['m'])
    assert convs and all((c.n, c.m, c.method) == (n, m, hit['method']) for _, c in convs)
    prefixes = tuple(p.rstrip('*') for p in cfg.model.sparsity.layers)
    assert all(name.startswith(prefixes) for name, _ in convs)
    # The paper's pruned-weight decay on every sparse config, MaxQ included: 2e-4 added to
    # the gradient under SGD, decoupled at twice the weight decay under AdamW.
    optimizer = cfg.optim_wrapper.optimizer
    if optimizer.type == 'AdamW':
        assert (hooks['SRSTEDecayHook']['decay'], hooks['SRSTEDecayHook']['mode']) == \
            (2 * optimizer.weight_decay, 'decoupled')
    else:
        assert hooks['SRSTEDecayHook']['decay'] == 2e-4
    assert 'SparsityScheduleHook' in hooks and 'SparsityLoggerHook' in hooks
