"""MaxQ in a one-stage detector: the synthetic RetinaNet config trains, ends 2:8, and deploys."""
import os.path as osp

import pytest
import torch

from mmdet_maxq.checkpoint import checkpoint_masks
from mmdet_maxq.sparsity import is_nm_sparse
from ..conftest import SINGLE_THREAD, data_options, run_tool

RETINANET = 'configs/synthetic/retinanet_r18-tiny-maxq-2of8_fpn_synthetic.py'


@pytest.fixture(scope='module')
def retinanet_run(synthetic_coco, tmp_path_factory):
    """One epoch of 4 iterations, full 2:8 from the first step (schedule end=0)."""
    work = str(tmp_path_factory.mktemp('retinanet'))
    proc = run_tool(['tools/train.py', RETINANET, '--work-dir', work, '--cfg-options',
                     'train_cfg.max_epochs=1', 'train_dataloader.dataset.indices=8',
                     'custom_hooks.0.end=0', 'custom_hooks.2.interval=2',
                     'default_hooks.logger.interval=2', *data_options(synthetic_coco)],
                    env=SINGLE_THREAD)
    return work, proc.stdout + proc.stderr


def test_training_logs_the_schedule_and_ends_exactly_2of8(retinanet_run):
    work, log = retinanet_run
    assert 'SparseDetector: RetinaNet with method=maxq 2:8' in log and '19 convs sparse' in log
    assert 'preserve_rate: 0.0000' in log and 'loss_cls' in log
    checkpoint = torch.load(osp.join(work, 'epoch_1.pth'), map_location='cpu',
                            weights_only=True)
    state = checkpoint['state_dict']
    masks = checkpoint_masks(checkpoint)
    assert len(masks) == 19 and all(k.startswith('backbone.') for k in masks)
    for key, mask in masks.items():
        weight = state[key + '.weight']
        assert is_nm_sparse(weight * mask, 2, 8), key
        assert float((weight * mask == 0).float().mean()) >= 0.75, key
        kept = mask[mask > 0]
        assert kept.min() >= 1 and kept.max() <= 3 and (kept > 1).any(), key
    assert 'backbone.conv1' not in masks  # 3-channel stem stays dense


def test_retinanet_deploys_to_a_verified_plain_model(retinanet_run, synthetic_coco, tmp_path):
    work, _ = retinanet_run
    out = tmp_path / 'retinanet.pth'
    # score_thr=0 so the barely trained head still yields detections to compare.
    proc = run_tool(['tools/deploy.py', RETINANET, osp.join(work, 'epoch_1.pth'), str(out),
                     '--num-images', '2', '--cfg-options',
                     'model.test_cfg.score_thr=0.0',
                     *data_options(synthetic_coco)], env=SINGLE_THREAD)
    log = proc.stdout + proc.stderr
    assert 'RetinaNet from mmdet.registry.MODELS' in log
    assert '19 of 19 folded convs exactly 2:8' in log
    assert '2 images, 40 detections' in log  # max_per_img=20
    assert out.is_file() and out.with_suffix('.py').is_file()
