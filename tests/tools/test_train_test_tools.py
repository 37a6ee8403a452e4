"""tools/train.py, --resume and tools/test.py end to end on the dense synthetic config."""
import json
import os
import os.path as osp
import re

import pytest

from ..conftest import data_options, run_tool

DENSE = 'configs/synthetic/mask-rcnn_r18-tiny_fpn_synthetic.py'


def _last_metrics(work_dir):
    """The last evaluation line MMEngine logged as JSON (vis_data/scalars.json)."""
    found = []
    for root, _, files in os.walk(work_dir):
        if 'scalars.json' in files:
            found.append(osp.join(root, 'scalars.json'))
    rows = [json.loads(line) for path in sorted(found) for line in open(path)]
    return [row for row in rows if 'coco/bbox_mAP' in row][-1]


@pytest.fixture(scope='module')
def trained(synthetic_coco, tmp_path_factory):
    """One epoch with tools/train.py, then --resume for a second: the work dir."""
    work = str(tmp_path_factory.mktemp('dense'))
    opts = ['--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
            *data_options(synthetic_coco)]
    run_tool(['tools/train.py', DENSE, '--work-dir', work, *opts])
    assert osp.isfile(osp.join(work, 'epoch_1.pth'))
    opts[1] = 'train_cfg.max_epochs=2'
    proc = run_tool(['tools/train.py', DENSE, '--work-dir', work,
                     '--resume', osp.join(work, 'epoch_1.pth'), *opts])
    return work, proc.stdout + proc.stderr


def test_resume_continues_at_epoch_two(trained):
    work, log = trained
    assert 'resumed epoch: 1' in log
    assert 'Epoch(train) [2]' in log and 'Epoch(train) [1]' not in log
    assert osp.isfile(osp.join(work, 'epoch_2.pth'))


def test_tool_output_has_no_pkg_resources_warnings(trained):
    _, log = trained
    assert 'pkg_resources' not in log


def test_brief_training_scores_above_zero_box_ap(trained):
    work, _ = trained
    metrics = _last_metrics(work)
    assert metrics['step'] == 2, 'the epoch-2 evaluation is missing (no detections?)'
    assert metrics['coco/bbox_mAP'] > 0, metrics
    assert 'coco/segm_mAP' in metrics


def test_test_tool_evaluates_the_checkpoint(trained, synthetic_coco, tmp_path):
    work, _ = trained
    out = tmp_path / 'preds.pkl'
    proc = run_tool(['tools/test.py', DENSE, osp.join(work, 'epoch_2.pth'), '--work-dir',
                     str(tmp_path), '--out', str(out), '--cfg-options',
                     *data_options(synthetic_coco)])
    log = proc.stdout + proc.stderr
    box = re.search(r'coco/bbox_mAP: ([0-9.]+)', log)
    mask = re.search(r'coco/segm_mAP: ([0-9.]+)', log)
    assert box and mask, log[-3000:]
    assert float(box.group(1)) > 0
    assert out.is_file() and out.stat().st_size > 0


def test_bad_paths_give_one_clear_line(synthetic_coco, tmp_path):
    proc = run_tool(['tools/train.py', 'configs/synthetic/nope.py'], check=False)
    assert proc.returncode != 0
    assert "config file 'configs/synthetic/nope.py' does not exist" in proc.stderr
    assert 'Traceback' not in proc.stderr

    proc = run_tool(['tools/train.py', DENSE, '--work-dir', str(tmp_path / 'w'),
                     '--cfg-options', 'train_dataloader.dataset.data_root=/no/such/root/'],
                    check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert "data_root '/no/such/root/' does not exist" in proc.stderr
    assert not (tmp_path / 'w').exists()

    broken = tmp_path / 'broken.pth'
    broken.write_bytes(b'PK\x03\x04 truncated')
    proc = run_tool(['tools/test.py', DENSE, str(broken), '--cfg-options',
                     *data_options(synthetic_coco)], check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert f"checkpoint '{broken}' is not a PyTorch checkpoint" in proc.stderr

    proc = run_tool(['tools/test.py', DENSE, str(tmp_path / 'missing.pth')], check=False)
    assert proc.returncode != 0
    assert 'missing.pth' in proc.stderr and 'does not exist' in proc.stderr
