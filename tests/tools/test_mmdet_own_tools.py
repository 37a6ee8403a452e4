"""The configs run unchanged under the tools shipped inside the mmdet package."""
import os.path as osp
import re

import mmdet

from ..conftest import data_options, run_tool

MMDET_TOOLS = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools')
MAXQ = 'configs/synthetic/mask-rcnn_r18-tiny-maxq-2of8_fpn_synthetic.py'


def test_mmdet_train_and_test_run_a_sparse_config(synthetic_coco, tmp_path):
    work = str(tmp_path / 'work')
    opts = ['train_cfg.max_epochs=1', 'train_dataloader.dataset.indices=8',
            'custom_hooks.0.end=0', *data_options(synthetic_coco)]
    # No PYTHONPATH help: custom_imports in the config must register everything.
    run_tool([osp.join(MMDET_TOOLS, 'train.py'), MAXQ, '--work-dir', work, '--cfg-options',
              *opts], env=dict(PYTHONPATH=''))
    ckpt = osp.join(work, 'epoch_1.pth')
    # mmdet's test.py loads the MMEngine checkpoint under torch.load(weights_only=True).
    proc = run_tool([osp.join(MMDET_TOOLS, 'test.py'), MAXQ, ckpt, '--work-dir', work,
                     '--cfg-options', *data_options(synthetic_coco)], env=dict(PYTHONPATH=''))
    assert re.search(r'coco/bbox_mAP: [0-9.]+', proc.stdout + proc.stderr)
