"""tools/deploy.py on a short MaxQ 2:8 training: fold, write, verify, run with plain MMDetection."""
import copy
import importlib.util
import os
import os.path as osp
import re

import pytest
import torch
import torch.nn as nn
from mmdet.apis import init_detector
from mmdet.registry import DATASETS, MODELS
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

import mmdet_maxq
from mmdet_maxq.checkpoint import checkpoint_masks
from mmdet_maxq.cli import CliError
from mmdet_maxq.deploy import DeployError, VerificationError, export_verified
from mmdet_maxq.models import SparseConv2d, refresh_masks
from mmdet_maxq.sparsity import is_nm_sparse
from ..conftest import REPO, SHORT_MAXQ_CONFIG, SINGLE_THREAD, data_options, run_tool

MAXQ = osp.join(REPO, SHORT_MAXQ_CONFIG)
DENSE_PARENT = osp.join(REPO, 'configs/synthetic/mask-rcnn_r18-tiny_fpn_synthetic.py')
spec = importlib.util.spec_from_file_location('deploy_tool', osp.join(REPO, 'tools', 'deploy.py'))
TOOL = importlib.util.module_from_spec(spec)
spec.loader.exec_module(TOOL)


def _cfg(root):
    cfg = Config.fromfile(MAXQ)
    cfg.merge_from_dict(dict(option.split('=', 1) for option in data_options(root)))
    return cfg


def _sparse_model(cfg, checkpoint):
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True, logger='silent')
    return model.eval()


def _state(path):
    return torch.load(path, map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def deployed(short_maxq_run, synthetic_coco, tmp_path_factory):
    """tools/deploy.py on the end-of-schedule checkpoint: (checkpoint, config, output)."""
    out = tmp_path_factory.mktemp('deploy') / 'model.pth'
    proc = run_tool(['tools/deploy.py', MAXQ, osp.join(short_maxq_run, 'epoch_2.pth'), str(out),
                     '--cfg-options', *data_options(synthetic_coco)], env=SINGLE_THREAD)
    return str(out), str(out.with_suffix('.py')), proc.stdout + proc.stderr


def test_tool_reports_the_three_checks_passed(deployed):
    _, _, log = deployed
    assert re.search(r'\(a\) every folded conv is exactly 2:8\s*│ PASS\s*│ 19 of 19', log), log
    assert re.search(r'\(b\) plain MMDetection builds.*│ PASS', log), log
    assert re.search(r'\(c\) plain predictions equal.*│ PASS\s*│ 4 images', log), log
    assert 'predictions on 4 images of the test dataset' in log


def test_exported_checkpoint_is_the_plain_detector(deployed, short_maxq_run):
    ckpt, _, _ = deployed
    saved = _state(ckpt)
    assert set(saved) == {'state_dict', 'meta'}
    keys = list(saved['state_dict'])
    assert not [k for k in keys if k.endswith('.mask') or k.startswith('architecture.')]
    meta = saved['meta']
    assert meta['sparsity']['n'] == 2 and meta['sparsity']['m'] == 8
    assert meta['sparsity']['method'] == 'maxq' and meta['sparsity']['preserve'] == 0.0
    assert len(meta['sparsity']['folded_layers']) == 19
    assert meta['source_checkpoint'] == osp.abspath(osp.join(short_maxq_run, 'epoch_2.pth'))
    assert meta['mmdet_maxq_version'] == mmdet_maxq.__version__
    assert tuple(meta['dataset_meta']['classes']) == ('rectangle', 'ellipse', 'triangle')


def test_plain_config_loads_strictly_and_backbone_is_exactly_2of8(deployed):
    ckpt, config, _ = deployed
    cfg = Config.fromfile(config)
    assert cfg.model.type == 'MaskRCNN'
    assert 'custom_imports' not in cfg and not cfg.get('custom_hooks')
    init_default_scope('mmdet')
    plain = MODELS.build(cfg.model)
    load_checkpoint(plain, ckpt, map_location='cpu', strict=True, logger='silent')
    assert set(plain.state_dict()) == set(_state(ckpt)['state_dict'])
    convs = {n: m for n, m in plain.named_modules()
             if isinstance(m, nn.Conv2d) and n.startswith('backbone.')}
    assert not any(isinstance(m, SparseConv2d) for m in plain.modules())
    eligible = {n: m for n, m in convs.items() if m.weight.shape[1] % 8 == 0}
    assert len(eligible) == 19 and set(convs) - set(eligible) == {'backbone.conv1'}
    for name, conv in eligible.items():
        assert is_nm_sparse(conv.weight, 2, 8), name
        assert float((conv.weight == 0).float().mean()) >= 0.75, name
    # MMDetection's inference API reads the classes from the checkpoint's meta.
    detector = init_detector(config, ckpt, device='cpu')
    assert tuple(detector.dataset_meta['classes']) == ('rectangle', 'ellipse', 'triangle')


def test_plain_predictions_equal_the_sparse_model(deployed, short_maxq_run, synthetic_coco,
                                                  one_thread):
    """Independent of the tool's check: the sparse model (masks at preserve 0) vs the plain
    model MMDetection builds from the written files, on the validation images."""
    ckpt, config, _ = deployed
    cfg = _cfg(synthetic_coco)
    sparse = _sparse_model(cfg, osp.join(short_maxq_run, 'epoch_2.pth'))
    refresh_masks(sparse, 0.0)
    plain_cfg = Config.fromfile(config)
    plain = MODELS.build(plain_cfg.model)
    load_checkpoint(plain, ckpt, map_location='cpu', strict=True, logger='silent')
    plain.eval()
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    detections = 0
    with torch.no_grad():
        for index in range(4):
            batch = pseudo_collate([dataset[index]])
            ref = sparse.test_step(copy.deepcopy(batch))[0].pred_instances
            out = plain.test_step(copy.deepcopy(batch))[0].pred_instances
            assert torch.equal(ref.labels, out.labels)
            torch.testing.assert_close(out.bboxes, ref.bboxes, atol=1e-4, rtol=0)
            torch.testing.assert_close(out.scores, ref.scores, atol=1e-4, rtol=0)
            detections += len(ref.labels)
    assert detections > 0, 'no detections: the comparison would be vacuous'


PLAIN_SERVER = """
import sys
sys.modules['mmdet_maxq'] = None  # a server with MMDetection alone
import numpy as np
import torch
from mmdet.apis import inference_detector, init_detector
config, checkpoint = sys.argv[1:]
torch.load(checkpoint, map_location='cpu', weights_only=True)  # no allow-list needed
model = init_detector(config, checkpoint, device='cpu')
image = np.random.RandomState(0).randint(0, 255, (128, 128, 3), dtype=np.uint8)
result = inference_detector(model, image)
print('plain server ok', type(model).__name__, len(result.pred_instances))
"""


def test_a_server_with_mmdetection_alone_runs_the_deployed_files(deployed):
    ckpt, config, _ = deployed
    proc = run_tool(['-I', '-c', PLAIN_SERVER, config, ckpt], env=SINGLE_THREAD)
    assert 'plain server ok MaskRCNN' in proc.stdout


def test_test_tool_runs_the_plain_config(deployed, synthetic_coco, tmp_path):
    ckpt, config, _ = deployed
    proc = run_tool(['tools/test.py', config, ckpt, '--work-dir', str(tmp_path),
                     '--cfg-options', *data_options(synthetic_coco)], env=SINGLE_THREAD)
    assert re.search(r'coco/bbox_mAP: [0-9.]+', proc.stdout + proc.stderr)


@pytest.mark.parametrize('existing', ['model.pth', 'model.py'])
def test_existing_output_is_refused_before_anything(tmp_path, short_maxq_run, existing):
    (tmp_path / existing).write_text('keep me')
    with pytest.raises(CliError, match='exists; pass --overwrite'):
        TOOL.main([MAXQ, osp.join(short_maxq_run, 'epoch_2.pth'), str(tmp_path / 'model.pth')])
    assert sorted(os.listdir(tmp_path)) == [existing]
    assert (tmp_path / existing).read_text() == 'keep me'


def test_a_plain_detector_config_is_refused(tmp_path, short_maxq_run):
    with pytest.raises(CliError, match='not a SparseDetector'):
        TOOL.main([DENSE_PARENT, osp.join(short_maxq_run, 'epoch_2.pth'),
                   str(tmp_path / 'model.pth')])
    assert not os.listdir(tmp_path)


def _forgot_the_mask(self):
    """A broken fold: the plain conv gets the raw weight, not W * S."""
    conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                     self.padding, self.dilation, self.groups, self.bias is not None)
    conv.weight = nn.Parameter(self.weight.detach().clone())
    if self.bias is not None:
        conv.bias = nn.Parameter(self.bias.detach().clone())
    return conv


def _off_by_a_little(self):
    """A broken fold that keeps N:M but scales W * S by 1.001."""
    conv = _ORIGINAL_TO_DENSE(self)
    conv.weight.data.mul_(1.001)
    return conv


_ORIGINAL_TO_DENSE = SparseConv2d.to_dense


@pytest.mark.parametrize('broken_fold,failing', [(_forgot_the_mask, {'nm', 'predictions'}),
                                                 (_off_by_a_little, {'predictions'})])
def test_failed_verification_writes_nothing(short_maxq_run, synthetic_coco, tmp_path,
                                            monkeypatch, one_thread, broken_fold, failing):
    cfg = _cfg(synthetic_coco)
    model = _sparse_model(cfg, osp.join(short_maxq_run, 'epoch_2.pth'))
    monkeypatch.setattr(SparseConv2d, 'to_dense', broken_fold)
    out = tmp_path / 'deploy' / 'model.pth'
    with pytest.raises(VerificationError) as info:
        export_verified(model, cfg, str(out), num_images=2)
    assert {check.key for check in info.value.report.failures()} == failing
    assert not (tmp_path / 'deploy').exists(), 'outputs or temporaries left behind'


def test_random_images_when_the_test_data_is_missing(short_maxq_run, synthetic_coco, tmp_path,
                                                     one_thread):
    cfg = _cfg(synthetic_coco)
    cfg.test_dataloader.dataset.data_root = str(tmp_path / 'no_such_dir')
    model = _sparse_model(cfg, osp.join(short_maxq_run, 'epoch_2.pth'))
    result = export_verified(model, cfg, str(tmp_path / 'model.pth'), num_images=2)
    report = result.report
    assert report.passed and len(report.images) == 2
    assert report.image_source == '2 deterministic random 128x128 images (test data root not found)'
    assert [row.image for row in report.images] == ['random #0', 'random #1']


def test_mid_schedule_checkpoint_exports_exact_nm(short_maxq_run, synthetic_coco, tmp_path,
                                                  one_thread):
    source = osp.join(short_maxq_run, 'epoch_1.pth')
    state = _state(source)
    assert state['meta']['sparsity_schedule']['preserve'] == 1.0
    masks = checkpoint_masks(state)
    assert len(masks) == 19
    masked = [state['state_dict'][k + '.weight'] * v for k, v in masks.items()]
    assert not any(is_nm_sparse(w, 2, 8) for w in masked), 'p = 1: nothing should be N:M yet'
    out = tmp_path / 'mid.pth'
    result = TOOL.main([MAXQ, source, str(out), '--num-images', '2', '--cfg-options',
                        *data_options(synthetic_coco)])
    assert result.report.passed and len(result.remasked) == 19
    exported = _state(str(out))['state_dict']
    for name in result.folded:
        assert is_nm_sparse(exported[name + '.weight'], 2, 8), name


def test_checkpoint_of_another_model_is_refused(short_maxq_run, tmp_path):
    state = _state(osp.join(short_maxq_run, 'epoch_2.pth'))
    del state['state_dict']['roi_head.bbox_head.fc_cls.weight']
    broken = tmp_path / 'broken.pth'
    torch.save(state, broken)
    with pytest.raises(CliError, match=r'does not match the config\'s model \(missing keys \(1\): '
                       r'roi_head\.bbox_head\.fc_cls\.weight\)'):
        TOOL.main([MAXQ, str(broken), str(tmp_path / 'out' / 'model.pth')])
    assert not (tmp_path / 'out').exists()


def test_non_finite_weights_are_refused(short_maxq_run, synthetic_coco, tmp_path, one_thread):
    cfg = _cfg(synthetic_coco)
    model = _sparse_model(cfg, osp.join(short_maxq_run, 'epoch_2.pth'))
    with torch.no_grad():
        model.roi_head.bbox_head.fc_cls.weight[0, 0] = float('nan')
    with pytest.raises(DeployError, match='non-finite values in 1 tensors'):
        export_verified(model, cfg, str(tmp_path / 'model.pth'))
    assert not os.listdir(tmp_path)
