"""MMDetection's hooks that reach into the detector, on sparse models: YOLOX (mode switch,
EMA), an epoch-aware detector (SetEpochInfoHook), semi-supervised teacher/student."""
import os.path as osp
import types

import torch
from mmdet.engine.hooks import SetEpochInfoHook
from mmdet.models.detectors import RetinaNet
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmdet_maxq  # noqa: F401
from mmdet_maxq.models import sparse_layers, sparsity_settings
from mmdet_maxq.sparsity import maxq_mask
from ..conftest import REPO, SINGLE_THREAD, run_tool

YOLOX = 'configs/synthetic/yolox_tiny-maxq-2of8_synthetic.py'
RETINANET = osp.join(REPO, 'configs/synthetic/retinanet_r18-tiny-maxq-2of8_fpn_synthetic.py')

# Keeps the EMA weights just before validation (before EMAHook swaps them in) and, once
# validation runs (eval mode), every sparse conv's weight and mask and the YOLOX head's L1 flag.
PROBE = '''
import os.path as osp
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmdet.registry import HOOKS
from mmdet_maxq.models import sparse_layers


@HOOKS.register_module()
class ProbeValMasksHook(Hook):
    priority = 'HIGHEST'  # before EMAHook (49) swaps the weights

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.ema = None

    def before_val_epoch(self, runner):
        ema = [h for h in runner.hooks if type(h).__name__ == 'EMAHook'][0]
        self.ema = {name: conv.weight.detach().clone()
                    for name, conv in sparse_layers(ema.ema_model.module)}

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if batch_idx != 0:
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        state = {name: (conv.weight.detach().clone(), conv.mask.clone())
                 for name, conv in sparse_layers(model)}
        torch.save(dict(state=state, ema=self.ema, use_l1=model.bbox_head.use_l1,
                        epoch=runner.epoch),
                   osp.join(self.out_dir, f'val_epoch{runner.epoch}.pth'))
'''


def _yolox_data_options(root):
    root = root.rstrip('/') + '/'
    ann = root + 'annotations/instances_val.json'
    return ['train_dataloader.dataset.dataset.data_root=' + root,
            'val_dataloader.dataset.data_root=' + root,
            'test_dataloader.dataset.data_root=' + root,
            'val_evaluator.ann_file=' + ann, 'test_evaluator.ann_file=' + ann]


def test_sparse_yolox_trains_through_mode_switch_and_ema(synthetic_coco, tmp_path):
    work = tmp_path / 'yolox'
    work.mkdir()
    (tmp_path / 'probe_val_masks.py').write_text(PROBE)
    config = tmp_path / 'yolox_probe.py'
    config.write_text(
        f"_base_ = ['{osp.join(REPO, YOLOX)}']\n"
        "custom_imports = dict(imports=['mmdet_maxq', 'probe_val_masks'],\n"
        "                      allow_failed_imports=False)\n"
        f"custom_hooks = [*_base_.custom_hooks, dict(type='ProbeValMasksHook', "
        f"out_dir='{work}')]\n")
    proc = run_tool(['tools/train.py', str(config), '--work-dir', str(work), '--cfg-options',
                     'train_dataloader.dataset.dataset.indices=8',
                     'val_dataloader.dataset.indices=2',
                     *_yolox_data_options(synthetic_coco)],
                    env=dict(SINGLE_THREAD, PYTHONPATH=f'{REPO}:{tmp_path}'))
    log = proc.stdout + proc.stderr
    assert 'SparseDetector: YOLOX with method=maxq 2:8' in log
    assert 'No mosaic and mixup aug now!' in log  # YOLOXModeSwitchHook ran on model.bbox_head
    first = torch.load(work / 'val_epoch1.pth', weights_only=True)
    last = torch.load(work / 'val_epoch2.pth', weights_only=True)
    assert last['use_l1']  # the mode switch turned the head's L1 loss on
    for probe in (first, last):
        assert len(probe['state']) > 0
        for name, (weight, mask) in probe['state'].items():
            # Validation runs the EMA weights, with masks recomputed from them.
            assert torch.equal(weight, probe['ema'][name]), name
            assert torch.equal(mask, maxq_mask(weight, 2, 8)), name
    assert (work / 'epoch_2.pth').is_file()


@MODELS.register_module(force=True)
class EpochAwareRetinaNet(RetinaNet):
    """A detector with ``set_epoch`` (the method SetEpochInfoHook calls)."""

    def set_epoch(self, epoch):
        self.epoch_seen = epoch


def test_set_epoch_info_hook_reaches_the_sparse_detector():
    cfg = Config.fromfile(RETINANET).model
    cfg.detector = 'EpochAwareRetinaNet'
    init_default_scope('mmdet')
    model = MODELS.build(cfg)
    assert isinstance(model, EpochAwareRetinaNet) and sparsity_settings(model) is not None
    SetEpochInfoHook().before_train_epoch(types.SimpleNamespace(model=model, epoch=3))
    assert model.epoch_seen == 3


def test_semi_supervised_teacher_and_student_are_both_sparse():
    cfg = Config.fromfile(RETINANET).model
    init_default_scope('mmdet')
    model = MODELS.build(dict(
        type='SoftTeacher', detector=cfg,
        data_preprocessor=dict(type='MultiBranchDataPreprocessor',
                               data_preprocessor=cfg.data_preprocessor),
        semi_train_cfg=dict(freeze_teacher=True, sup_weight=1.0, unsup_weight=1.0,
                            cls_pseudo_thr=0.9, min_pseudo_bbox_wh=(1e-2, 1e-2)),
        semi_test_cfg=dict(predict_on='teacher')))
    names = {name.split('.')[0] for name, _ in sparse_layers(model)}
    assert names == {'teacher', 'student'}
    assert sparsity_settings(model).n == 2
    # MeanTeacherHook updates the teacher through .data; its masks follow at the next forward.
    teacher_conv = dict(sparse_layers(model.teacher))['backbone.layer1.0.conv1']
    teacher_conv.weight.data.mul_(0.5).add_(torch.randn_like(teacher_conv.weight), alpha=0.5)
    teacher_conv.eval()
    with torch.no_grad():
        teacher_conv(torch.randn(1, teacher_conv.in_channels, 8, 8))
    assert torch.equal(teacher_conv.mask, maxq_mask(teacher_conv.weight, 2, 8))
