"""MaxQ end to end on the synthetic set: train, test, N:M at the end, resume, DDP, logging."""
import json
import os
import os.path as osp
import re
import socket

import pytest
import torch

from mmdet_maxq.checkpoint import checkpoint_masks
from mmdet_maxq.sparsity import is_nm_sparse, preserve_rate
from ..conftest import REPO, data_options, run_tool

MAXQ = 'configs/synthetic/mask-rcnn_r18-tiny-maxq-2of8_fpn_synthetic.py'
SRSTE = 'configs/synthetic/mask-rcnn_r18-tiny-srste-2of8_fpn_synthetic.py'
# Three epochs, sparsity incremental over epochs 0-2 (cubic): the last epoch is full 2:8.
SHORT = ['train_cfg.max_epochs=3', 'train_cfg.val_interval=3', 'custom_hooks.0.end=2',
         'custom_hooks.2.interval=8', 'default_hooks.logger.interval=8']


def _scalars(work_dir):
    rows = []
    for root, _, files in sorted(os.walk(work_dir)):
        if 'scalars.json' in files:
            rows += [json.loads(line) for line in open(osp.join(root, 'scalars.json'))]
    return rows


def _state(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def _masks(checkpoint):
    """The masks of the sparse layers, recomputed from the checkpoint's weights."""
    return checkpoint_masks(checkpoint)


@pytest.fixture(scope='module')
def maxq_run(synthetic_coco, tmp_path_factory):
    work = str(tmp_path_factory.mktemp('maxq'))
    run_tool(['tools/train.py', MAXQ, '--work-dir', work, '--cfg-options', *SHORT,
              *data_options(synthetic_coco)])
    return work


def test_every_eligible_backbone_conv_is_exactly_nm_at_the_end(maxq_run):
    checkpoint = _state(osp.join(maxq_run, 'epoch_3.pth'))
    state = checkpoint['state_dict']
    masks = _masks(checkpoint)
    assert len(masks) == 19
    for key, mask in masks.items():
        weight = state[key + '.weight']
        assert is_nm_sparse(weight * mask, 2, 8), key
        kept = mask[mask > 0]
        assert kept.min() >= 1 and kept.max() <= 3
        assert (kept > 1).any(), f'{key}: MaxQ soft multipliers missing'


def test_schedule_and_sparsity_are_logged(maxq_run):
    rows = [r for r in _scalars(maxq_run) if 'preserve_rate' in r]
    assert rows
    for row in rows:
        assert row['preserve_rate'] == pytest.approx(preserve_rate('cubic', row['epoch'] - 1, 0, 2))
    assert {r['epoch'] for r in rows} == {1, 2, 3}
    last = rows[-1]
    assert last['sparsity/nm_blocks'] == pytest.approx(1.0)
    assert last['sparsity/backbone.layer2'] == pytest.approx(0.75, abs=1e-6)
    first = rows[0]
    assert first['sparsity/nm_blocks'] < 0.5  # epoch 1 still exempts every block (p = 1)


def test_test_tool_prints_box_and_mask_ap(maxq_run, synthetic_coco, tmp_path):
    proc = run_tool(['tools/test.py', MAXQ, osp.join(maxq_run, 'epoch_3.pth'), '--work-dir',
                     str(tmp_path), '--cfg-options', *data_options(synthetic_coco)])
    log = proc.stdout + proc.stderr
    assert re.search(r'coco/bbox_mAP: [0-9.]+', log) and re.search(r'coco/segm_mAP: [0-9.]+', log)


def test_resumed_run_has_the_masks_of_the_uninterrupted_one(maxq_run, synthetic_coco,
                                                            tmp_path):
    work = str(tmp_path / 'interrupted')
    first = [o.replace('train_cfg.max_epochs=3', 'train_cfg.max_epochs=2') for o in SHORT]
    run_tool(['tools/train.py', MAXQ, '--work-dir', work, '--cfg-options', *first,
              *data_options(synthetic_coco)])
    interrupted = _state(osp.join(work, 'epoch_2.pth'))
    assert interrupted['meta']['sparsity_schedule']['preserve'] == pytest.approx(
        preserve_rate('cubic', 1, 0, 2))
    run_tool(['tools/train.py', MAXQ, '--work-dir', work, '--resume', '--cfg-options', *SHORT,
              *data_options(synthetic_coco)])
    resumed = _masks(_state(osp.join(work, 'epoch_3.pth')))
    straight = _masks(_state(osp.join(maxq_run, 'epoch_3.pth')))
    assert resumed.keys() == straight.keys()
    for key in straight:
        assert torch.equal(resumed[key], straight[key]), key


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_ddp_two_ranks_compute_identical_masks(synthetic_coco, tmp_path):
    """Two gloo ranks through torchrun; DDP does not broadcast buffers, so equal masks mean
    each rank computed the same masks from the same (all-reduced) weights."""
    work = tmp_path / 'ddp'
    work.mkdir()
    config = tmp_path / 'ddp_config.py'
    config.write_text(
        f"_base_ = ['{osp.join(REPO, SRSTE)}']\n"
        "custom_imports = dict(imports=['mmdet_maxq', 'tests.engine.dump_masks_hook'],\n"
        "                      allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='SparsityScheduleHook', kind='cubic', start=0, end=0),\n"
        "                *_base_.custom_hooks[1:],\n"
        f"                dict(type='DumpMasksHook', out_dir='{work}')]\n")
    args = ['-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={_free_port()}',
            'tools/train.py', str(config), '--launcher', 'pytorch', '--work-dir', str(work),
            '--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=2',
            'env_cfg.dist_cfg.backend=gloo', 'train_dataloader.dataset.indices=8',
            *data_options(synthetic_coco)]
    run_tool(args, env=dict(OMP_NUM_THREADS='1'))
    rank0 = torch.load(work / 'masks_rank0.pth', weights_only=True)
    rank1 = torch.load(work / 'masks_rank1.pth', weights_only=True)
    assert rank0['world_size'] == rank1['world_size'] == 2
    assert rank0['iter'] == rank1['iter'] == 1  # the second iteration: after one DDP step
    assert rank0['masks'].keys() == rank1['masks'].keys() and len(rank0['masks']) == 19
    for key in rank0['masks']:
        assert torch.equal(rank0['masks'][key], rank1['masks'][key]), key
        assert set(rank0['masks'][key].unique().tolist()) == {0.0, 1.0}  # SR-STE: hard N:M
    assert (work / 'epoch_1.pth').is_file()


def test_iteration_schedule_logged_every_iteration(synthetic_coco, tmp_path):
    work = str(tmp_path / 'by_iter')
    run_tool(['tools/train.py', MAXQ, '--work-dir', work, '--cfg-options',
              'train_cfg.max_epochs=1', 'train_cfg.val_interval=2',
              'train_dataloader.dataset.indices=16', 'custom_hooks.0.by_epoch=False',
              'custom_hooks.0.kind=linear', 'custom_hooks.0.start=1', 'custom_hooks.0.end=6',
              'custom_hooks.2.interval=1', 'default_hooks.logger.interval=1',
              *data_options(synthetic_coco)])
    rows = [r for r in _scalars(work) if 'preserve_rate' in r]
    assert [r['step'] for r in rows] == list(range(1, 9))
    for row in rows:
        # Logged after iteration step - 1, whose masks used the rate of that iteration.
        assert row['preserve_rate'] == pytest.approx(preserve_rate('linear', row['step'] - 1, 1, 6))
    assert rows[0]['preserve_rate'] == 1.0 and rows[-1]['preserve_rate'] == 0.0
    assert rows[-1]['sparsity/nm_blocks'] == pytest.approx(1.0)


def test_schedule_past_training_length_is_refused(synthetic_coco, tmp_path):
    proc = run_tool(['tools/train.py', MAXQ, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                     'train_cfg.max_epochs=2', 'custom_hooks.0.end=5',
                     *data_options(synthetic_coco)], check=False)
    assert proc.returncode != 0
    assert 'end=5 is past the training length (max_epochs=2)' in proc.stderr
