"""tools/ap_table.py on work dirs written with MMEngine's own writers.

The files are produced by the same calls the Runner makes: ``Config.dump`` (``dump_config``),
``LocalVisBackend.add_config`` / ``add_scalars(..., file_path='<ts>.json')`` (``LoggerHook``
after train iterations and validation) and ``mmengine.dump`` of the test metrics
(``LoggerHook.after_test_epoch``).
"""
import importlib.util
import os
import os.path as osp

import pytest
from mmengine import dump
from mmengine.config import Config
from mmengine.visualization import LocalVisBackend

from mmdet_maxq.analysis.ap_table import (ResultsError, collect_rows, describe_model,
                                          find_evaluation, format_table, model_name)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
spec = importlib.util.spec_from_file_location('ap_table_tool',
                                              osp.join(ROOT, 'tools', 'ap_table.py'))
TOOL = importlib.util.module_from_spec(spec)
spec.loader.exec_module(TOOL)


def mask_rcnn(depth=50):
    return dict(type='MaskRCNN', backbone=dict(type='ResNet', depth=depth),
                roi_head=dict(type='StandardRoIHead', mask_head=dict(type='FCNMaskHead')))


def sparse(arch, method, n, m):
    detector = dict(arch)
    return dict(detector, type='SparseDetector', detector=detector.pop('type'),
                sparsity=dict(method=method, n=n, m=m, layers=['backbone.*']))


def metrics(box, mask=None, prefix='coco/'):
    out = {f'{prefix}bbox_mAP': box, f'{prefix}bbox_mAP_50': box + 0.2,
           f'{prefix}bbox_mAP_75': box + 0.05, f'{prefix}bbox_mAP_s': 0.1}
    if mask is not None:
        out.update({f'{prefix}segm_mAP': mask, f'{prefix}segm_mAP_50': mask + 0.2,
                    f'{prefix}segm_mAP_75': mask + 0.04})
    return out


def make_run(work_dir, ts, model, vals=(), test=None, config_name='cfg.py'):
    """One Runner session: config dumps, train/val scalars, optional test results."""
    os.makedirs(work_dir, exist_ok=True)
    cfg = Config(dict(model=model, custom_imports=dict(imports=['mmdet_maxq'])))
    cfg.dump(osp.join(work_dir, config_name))
    backend = LocalVisBackend(save_dir=osp.join(work_dir, ts, 'vis_data'))
    backend.add_config(cfg)
    for epoch, val in enumerate(vals, start=1):
        backend.add_scalars({'lr': 0.02, 'loss': 1.5, 'epoch': epoch, 'iter': 50 * epoch},
                            step=50 * epoch, file_path=f'{ts}.json')
        backend.add_scalars(dict(val, data_time=0.01, time=0.2), step=epoch,
                            file_path=f'{ts}.json')
    if test is not None:
        dump(dict(test, data_time=0.01, time=0.2), osp.join(work_dir, ts, f'{ts}.json'))


@pytest.fixture
def work_dirs(tmp_path):
    dense = str(tmp_path / 'dense')
    make_run(dense, '20240101_100000', mask_rcnn(), vals=[metrics(0.30, 0.28), metrics(0.38, 0.35)])
    maxq = str(tmp_path / 'maxq')
    make_run(maxq, '20240102_100000', sparse(mask_rcnn(), 'maxq', 2, 8),
             vals=[metrics(0.33, 0.31)])
    make_run(maxq, '20240103_100000', sparse(mask_rcnn(), 'maxq', 2, 8),
             test=metrics(0.3744, 0.3456))
    srste = str(tmp_path / 'srste')
    make_run(srste, '20240104_100000',
             sparse(dict(type='FasterRCNN', backbone=dict(type='ResNet', depth=50)), 'srste', 2, 4),
             vals=[{'val/' + k: v for k, v in metrics(0.36).items()}])  # log_with_hierarchy
    return dense, maxq, srste


def test_find_evaluation_prefers_test_then_last_val(work_dirs):
    dense, maxq, _ = work_dirs
    ev = find_evaluation(dense)
    assert ev.kind == 'val' and ev.step == 2 and ev.metrics[('bbox', '')] == 0.38
    assert ev.source.endswith(osp.join('20240101_100000', 'vis_data', 'scalars.json'))
    ev = find_evaluation(maxq)
    assert ev.kind == 'test' and ev.source.endswith(osp.join('20240103_100000',
                                                             '20240103_100000.json'))


def test_table_layout_and_order(work_dirs):
    rows, warnings = collect_rows(list(reversed(work_dirs)))
    assert not warnings
    lines = format_table(rows).splitlines()
    assert lines[0] == ('| model | method | N:M | box AP | box AP50 | box AP75 | mask AP | '
                        'mask AP50 | mask AP75 |')
    assert lines[2] == '| Mask R-CNN R-50 | Dense | - | 38.0 | 58.0 | 43.0 | 35.0 | 55.0 | 39.0 |'
    assert lines[3] == '| Faster R-CNN R-50 | SR-STE | 2:4 | 36.0 | 56.0 | 41.0 | - | - | - |'
    assert lines[4] == '| Mask R-CNN R-50 | MaxQ | 2:8 | 37.4 | 57.4 | 42.4 | 34.6 | 54.6 | 38.6 |'
    assert len(lines) == 5


def test_model_names():
    cascade = dict(type='CascadeRCNN', backbone=dict(type='ResNet', depth=101),
                   roi_head=dict(type='CascadeRoIHead', mask_head=[dict(type='FCNMaskHead')]))
    assert model_name(cascade) == 'Cascade Mask R-CNN R-101'
    assert model_name(dict(cascade, roi_head=dict(type='CascadeRoIHead'))) == 'Cascade R-CNN R-101'
    assert model_name(dict(type='RetinaNet', backbone=dict(type='ResNet', depth=18))) == \
        'RetinaNet R-18'
    assert model_name(dict(type='mmdet.FCOS', backbone=dict(type='ResNet', depth=50))) == \
        'FCOS R-50'
    assert model_name(dict(type='ATSS', backbone=dict(type='SwinTransformer'))) == \
        'ATSS SwinTransformer'
    assert describe_model(sparse(mask_rcnn(), 'dense', 2, 4)) == ('Mask R-CNN R-50', 'dense',
                                                                  None, None)


def test_missing_results(work_dirs, tmp_path, capsys):
    empty = str(tmp_path / 'train_only')
    make_run(empty, '20240105_100000', mask_rcnn())
    with pytest.raises(ResultsError, match='no evaluation results in .*train_only'):
        collect_rows([work_dirs[0], empty])
    with pytest.raises(SystemExit) as exc:
        TOOL.main([work_dirs[0], empty])
    assert 'train_only' in str(exc.value.code)
    table = TOOL.main([work_dirs[0], empty, '--skip-missing'])
    assert 'Mask R-CNN R-50 | Dense' in table
    assert 'warning: skipped: no evaluation results in' in capsys.readouterr().err
    with pytest.raises(SystemExit, match='does not exist'):
        TOOL.main([work_dirs[0], str(tmp_path / 'nowhere'), '--skip-missing'])


def test_cut_last_line_is_ignored(tmp_path):
    work_dir = str(tmp_path / 'killed')
    make_run(work_dir, '20240106_100000', mask_rcnn(18), vals=[metrics(0.2)])
    with open(osp.join(work_dir, '20240106_100000', 'vis_data', 'scalars.json'), 'a') as f:
        f.write('{"coco/bbox_mAP": 0.9, "coco/bbo')
    assert find_evaluation(work_dir).metrics[('bbox', '')] == 0.2


def test_out_file(work_dirs, tmp_path):
    out = tmp_path / 'table.md'
    table = TOOL.main([*work_dirs, '--out', str(out)])
    assert out.read_text() == table
    out.write_text('old')
    with pytest.raises(SystemExit, match='exists; pass --overwrite'):
        TOOL.main([*work_dirs, '--out', str(out)])
    assert out.read_text() == 'old'
    TOOL.main([*work_dirs, '--out', str(out), '--overwrite'])
    assert out.read_text() == table
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ['table.md']


def test_work_dir_of_a_real_mmengine_runner(tmp_path):
    """Train (validating each epoch) and test a toy model with MMEngine's Runner."""
    import torch
    from mmengine.evaluator import BaseMetric
    from mmengine.model import BaseModel
    from mmengine.registry import DATASETS, METRICS, MODELS
    from mmengine.runner import Runner

    @MODELS.register_module(name='ApTableToyDet', force=True)
    class ToyDet(BaseModel):

        def __init__(self, **kwargs):
            super().__init__()
            self.fc = torch.nn.Linear(2, 1)

        def forward(self, inputs, data_samples=None, mode='tensor'):
            out = self.fc(torch.stack(inputs))
            return {'loss': out.pow(2).mean()} if mode == 'loss' else list(out)

    @METRICS.register_module(name='ApTableToyCoco', force=True)
    class ToyCoco(BaseMetric):
        default_prefix = 'coco'
        calls = [0]

        def process(self, data_batch, data_samples):
            self.results.extend(data_samples)

        def compute_metrics(self, results):
            self.calls[0] += 1
            return {'bbox_mAP': 0.1 * self.calls[0], 'bbox_mAP_50': 0.5, 'bbox_mAP_75': 0.25}

    @DATASETS.register_module(name='ApTableToyData', force=True)
    class ToyData(torch.utils.data.Dataset):

        def __len__(self):
            return 2

        def __getitem__(self, idx):
            return dict(inputs=torch.full((2, ), float(idx)))

    loader = dict(batch_size=2, num_workers=0, dataset=dict(type='ApTableToyData'),
                  sampler=dict(type='DefaultSampler', shuffle=False))
    work_dir = str(tmp_path / 'toy')
    runner = Runner.from_cfg(Config(dict(
        model=dict(type='ApTableToyDet', backbone=dict(type='ResNet', depth=18)),
        work_dir=work_dir, default_scope='mmengine', train_dataloader=loader,
        val_dataloader=loader, test_dataloader=loader,
        train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=1), val_cfg=dict(),
        test_cfg=dict(), val_evaluator=dict(type='ApTableToyCoco'),
        test_evaluator=dict(type='ApTableToyCoco'),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=100)))))
    runner.train()
    ev = find_evaluation(work_dir)
    assert (ev.kind, ev.step, ev.metrics[('bbox', '')]) == ('val', 2, 0.2)
    runner.test()
    rows, _ = collect_rows([work_dir])
    assert rows[0].evaluation.kind == 'test'
    assert format_table(rows).splitlines()[2] == \
        '| ApTableToyDet R-18 | Dense | - | 30.0 | 50.0 | 25.0 | - | - | - |'
