"""A run SIGKILLed right after a checkpoint and restarted with ``--resume`` ends bit-identical
(weights, masks, optimizer state) to the same run left alone: with and without a fixed seed,
for a sparse detector and for an mmpretrain classifier, and for a 2-process gloo DDP run.

"The same run" without a fixed seed is an uninterrupted run given the seed that the interrupted
run drew (MMEngine saves it in the checkpoint's ``meta['seed']``). Everything runs on the CPU
with ``num_workers=0`` (the workers' own streams are not restorable: see the README).
"""
import os.path as osp
import socket

import numpy as np
import pytest
import torch

import mmdet_maxq  # noqa: F401  MMEngine checkpoints load under weights_only=True
from ..conftest import REPO, SINGLE_THREAD, data_options, run_tool

MAXQ = osp.join(REPO, 'configs/synthetic/mask-rcnn_r18-tiny-maxq-2of8_fpn_synthetic.py')
# Two epochs of 4 iterations, incremental MaxQ sparsity over epoch 0 (masks change through the
# run), a checkpoint and a validation after each epoch (the run left alone validates between
# the checkpoint and the next epoch; the killed one does not).
DETECTOR_OPTIONS = ['train_cfg.max_epochs=2', 'train_cfg.val_interval=1',
                    'train_dataloader.dataset.indices=8', 'custom_hooks.0.end=1',
                    'default_hooks.logger.interval=1']


def _load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def _differences(a, b, prefix=''):
    """The paths at which two nested checkpoint structures differ (tensors compared exactly)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b))
        return [] if same else [prefix]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f'{prefix} (keys)']
        return [d for key in a for d in _differences(a[key], b[key], f'{prefix}.{key}')]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f'{prefix} (length)']
        return [d for i, (x, y) in enumerate(zip(a, b))
                for d in _differences(x, y, f'{prefix}.{i}')]
    return [] if a == b else [prefix]


def assert_same_training_state(resumed_path, straight_path):
    resumed, straight = _load(resumed_path), _load(straight_path)
    assert resumed['meta']['epoch'] == straight['meta']['epoch']
    assert resumed['meta']['iter'] == straight['meta']['iter']
    tensors = [k for k, v in straight['state_dict'].items() if isinstance(v, torch.Tensor)]
    for part in ('state_dict', 'optimizer'):
        differ = _differences(resumed[part], straight[part], part)
        assert not differ, f'{len(differ)} entries differ (of {len(tensors)} tensors): {differ[:8]}'


def _with_kill_hook(tmp_path, base, epoch):
    """A config: ``base`` plus a hook that SIGKILLs the run after epoch ``epoch``'s checkpoint."""
    path = tmp_path / f'kill_after_{epoch}.py'
    path.write_text(
        f"_base_ = ['{base}']\n"
        "custom_imports = dict(imports=['mmdet_maxq', 'tests.engine.kill_hook'],\n"
        "                      allow_failed_imports=False)\n"
        "custom_hooks = [*_base_.custom_hooks,\n"
        f"                dict(type='KillAfterCheckpointHook', epoch={epoch})]\n")
    return str(path)


def _train(prefix, config, work, options, extra=(), check=True):
    return run_tool([*prefix, 'tools/train.py', config, '--work-dir', str(work), *extra,
                     '--cfg-options', *options], check=check, env=SINGLE_THREAD)


def check_kill_resume_matches_straight(tmp_path, config, options, seed, prefix=()):
    """Train ``config`` for its 2 epochs killed after epoch 1 and resumed, and uninterrupted;
    assert their final checkpoints are bit-identical."""
    seed_option = [f'randomness.seed={seed}']
    work = tmp_path / 'interrupted'
    killed = _train(prefix, _with_kill_hook(tmp_path, config, 1), work, options + seed_option,
                    check=False)
    assert killed.returncode != 0, 'the kill hook did not stop the run'
    assert (work / 'epoch_1.pth').is_file() and not (work / 'epoch_2.pth').exists()
    drawn = _load(work / 'epoch_1.pth')['meta']['seed']
    if seed is not None:
        assert drawn == seed
    proc = _train(prefix, config, work, options + seed_option, extra=['--resume'])
    assert 'resumed epoch: 1' in (proc.stdout + proc.stderr)
    straight = tmp_path / 'straight'
    _train(prefix, config, straight, options + [f'randomness.seed={drawn}'])
    assert_same_training_state(work / 'epoch_2.pth', straight / 'epoch_2.pth')


@pytest.mark.parametrize('seed', [0, None], ids=['fixed-seed', 'no-seed'])
def test_detector_resume_is_exact(synthetic_coco, tmp_path, seed):
    check_kill_resume_matches_straight(tmp_path, MAXQ, DETECTOR_OPTIONS + data_options(
        synthetic_coco), seed)


# -- an mmpretrain classifier ---------------------------------------------------------------

CLASSIFIER_CONFIG = """
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmdet_maxq'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(num_classes=2, mean=[127.5] * 3, std=[64.0] * 3, to_rgb=True),
    backbone=dict(type='ResNet', depth=18, stem_channels=8, base_channels=8,
                  drop_path_rate=0.2),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=2, in_channels=64,
              loss=dict(type='CrossEntropyLoss')))
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='CustomDataset', data_root='{root}', pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='RandomResizedCrop', scale=24),
        dict(type='RandomFlip', prob=0.5, direction='horizontal'),
        dict(type='PackInputs'),
    ]))
train_cfg = dict(by_epoch=True, max_epochs=2)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-4))
param_scheduler = dict(type='MultiStepLR', by_epoch=True, milestones=[1], gamma=0.5)
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1),
    sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0, deterministic=False)
custom_hooks = [dict(type='RandomStateHook')]
"""


@pytest.fixture(scope='module')
def classifier_config(tmp_path_factory):
    """A tiny ImageNet-style folder set (2 classes x 8 images of 32 px) and a plain mmpretrain
    ``ImageClassifier`` config over it, with ``RandomStateHook``."""
    from PIL import Image

    root = tmp_path_factory.mktemp('folder_set')
    rng = np.random.default_rng(0)
    for label in range(2):
        (root / f'class_{label}').mkdir()
        for i in range(8):
            pixels = rng.integers(0, 128, (32, 32, 3), dtype=np.uint8) + np.uint8(100 * label)
            Image.fromarray(pixels).save(root / f'class_{label}' / f'{i}.png')
    config = root.parent / 'tiny_classifier.py'
    config.write_text(CLASSIFIER_CONFIG.replace('{root}', str(root)))
    return str(config)


@pytest.mark.parametrize('seed', [0, None], ids=['fixed-seed', 'no-seed'])
def test_classifier_resume_is_exact(classifier_config, tmp_path, seed):
    check_kill_resume_matches_straight(tmp_path, classifier_config, [], seed)


# -- DDP ------------------------------------------------------------------------------------

def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_ddp_resume_restores_every_rank(synthetic_coco, tmp_path):
    """Two gloo ranks, each with its own seed (``diff_rank_seed``) and so its own streams: the
    checkpoint holds both ranks' states, and each rank gets its own back."""
    options = DETECTOR_OPTIONS + data_options(synthetic_coco) + [
        'env_cfg.dist_cfg.backend=gloo', 'randomness.diff_rank_seed=True']
    prefix = ['-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={_free_port()}']
    work = tmp_path / 'interrupted'
    killed = run_tool([*prefix, 'tools/train.py', _with_kill_hook(tmp_path, MAXQ, 1), '--launcher',
                       'pytorch', '--work-dir', str(work), '--cfg-options', *options,
                       'randomness.seed=None'], check=False, env=SINGLE_THREAD)
    assert killed.returncode != 0
    states = _load(work / 'epoch_1.pth')['meta']['random_state']
    assert sorted(states) == [0, 1]
    assert not torch.equal(states[0]['torch'], states[1]['torch'])
    drawn = _load(work / 'epoch_1.pth')['meta']['seed']
    for run_prefix, run_work, extra, seed in ((prefix, work, ['--resume'], 'None'),
                                              (prefix, tmp_path / 'straight', [], drawn)):
        run_prefix[-1] = f'--master_port={_free_port()}'
        run_tool([*run_prefix, 'tools/train.py', MAXQ, '--launcher', 'pytorch', '--work-dir',
                  str(run_work), *extra, '--cfg-options', *options, f'randomness.seed={seed}'],
                 env=SINGLE_THREAD)
    assert_same_training_state(work / 'epoch_2.pth', tmp_path / 'straight' / 'epoch_2.pth')
