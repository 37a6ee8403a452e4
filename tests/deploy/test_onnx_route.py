"""The manual ONNX Runtime route (tools/misc/onnx_nm_check.py): skipped unless MMDeploy 1.3.1,
ONNX and ONNX Runtime are importable (they are not part of the project's set-up; see
docs/deploy.md for the install into a separate folder on ``PYTHONPATH``)."""
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmdet_maxq.deploy import export_verified
from ..conftest import REPO, SINGLE_THREAD, run_tool

pytest.importorskip('mmdeploy')
pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

RETINANET = osp.join(REPO, 'configs/synthetic/retinanet_r18-tiny-maxq-2of8_fpn_synthetic.py')


def test_retinanet_exports_to_onnx_runtime_with_exact_nm(tmp_path, one_thread):
    from mmdet.registry import MODELS

    cfg = Config.fromfile(RETINANET)
    cfg.test_dataloader.dataset.data_root = str(tmp_path / 'no_data')  # random images
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    result = export_verified(model, cfg, str(tmp_path / 'deploy' / 'model.pth'), num_images=1)
    proc = run_tool(['tools/misc/onnx_nm_check.py', result.config, result.checkpoint,
                     str(tmp_path / 'onnx')],
                    env=dict(SINGLE_THREAD, PYTHONPATH=os.pathsep.join(  # keep the extra folder
                        [REPO, os.environ.get('PYTHONPATH', '')])))
    assert 'folded convs exactly 2:8 with every pruned weight still zero: 19 of 19' in proc.stdout
    assert 'ONNX Runtime outputs' in proc.stdout
