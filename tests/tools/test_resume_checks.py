"""``--resume`` refuses, before anything is written, a checkpoint it cannot continue: another
model or sparsity, a truncated file, a ``last_checkpoint`` naming a missing file."""
import argparse
import importlib.util
import os
import os.path as osp

import pytest
import torch

from mmdet_maxq.cli import CliError, build_config, load_config, resolve_resume
from ..conftest import REPO

MAXQ = osp.join(REPO, 'configs/synthetic/mask-rcnn_r18-tiny-maxq-2of8_fpn_synthetic.py')
DENSE = osp.join(REPO, 'configs/synthetic/mask-rcnn_r18-tiny_fpn_synthetic.py')


def _args(config, work_dir=None, cfg_options=None, launcher='none'):
    return argparse.Namespace(config=config, work_dir=work_dir, cfg_options=cfg_options,
                              launcher=launcher)


def _saved_by(config, path, **options):
    """A checkpoint as MMEngine writes it (``meta['cfg']`` is the run's config text)."""
    cfg = load_config(config)
    cfg.merge_from_dict(options)
    torch.save(dict(meta=dict(cfg=cfg.pretty_text, epoch=1, iter=4, seed=0),
                    state_dict={'backbone.conv1.weight': torch.zeros(2)}), str(path))
    return str(path)


def _config(config, work_dir, **options):
    return build_config(_args(config, str(work_dir), cfg_options=options or None))


def _refused(cfg, resume):
    with pytest.raises(CliError) as exc:
        resolve_resume(cfg, resume)
    assert '\n' not in exc.value.message
    return exc.value.message


def test_a_checkpoint_of_the_same_config_resumes(tmp_path):
    ckpt = _saved_by(MAXQ, tmp_path / 'epoch_1.pth')
    cfg = _config(MAXQ, tmp_path, **{'train_cfg.max_epochs': 9})  # a longer schedule is fine
    assert resolve_resume(cfg, ckpt) == ckpt
    (tmp_path / 'last_checkpoint').write_text(ckpt)
    assert resolve_resume(cfg, 'auto') == ckpt


@pytest.mark.parametrize('option,value,named', [
    ('model.sparsity.m', 4, "model.sparsity.m=8 there but 4 here"),
    ('model.sparsity.n', 1, "model.sparsity.n=2 there but 1 here"),
    ('model.sparsity.method', 'srste', "model.sparsity.method='maxq' there but 'srste' here"),
    ('model.backbone.depth', 50, "model.backbone.depth=18 there but 50 here"),
])
def test_other_sparsity_or_model_is_refused(tmp_path, option, value, named):
    ckpt = _saved_by(MAXQ, tmp_path / 'epoch_1.pth')
    message = _refused(_config(MAXQ, tmp_path, **{option: value}), ckpt)
    assert f'checkpoint {ckpt!r} was trained with another model or sparsity' in message
    assert named in message
    assert 'resume it with the config it was trained with' in message


def test_a_dense_checkpoint_into_a_sparse_config_is_refused(tmp_path):
    ckpt = _saved_by(DENSE, tmp_path / 'epoch_1.pth')
    message = _refused(_config(MAXQ, tmp_path), ckpt)
    assert "model.type='MaskRCNN' there but 'SparseDetector' here" in message
    assert "model.sparsity.m=None there but 8 here" in message


def test_truncated_checkpoint_is_refused(tmp_path):
    ckpt = _saved_by(MAXQ, tmp_path / 'full.pth')
    data = open(ckpt, 'rb').read()
    truncated = tmp_path / 'epoch_1.pth'
    truncated.write_bytes(data[:len(data) // 2])
    cfg = _config(MAXQ, tmp_path)
    assert 'damaged zip archive' in _refused(cfg, str(truncated))
    (tmp_path / 'last_checkpoint').write_text(str(truncated))
    message = _refused(cfg, 'auto')
    assert f"{tmp_path / 'last_checkpoint'} names {str(truncated)!r}" in message
    assert 'damaged zip archive' in message and 'delete' in message


def test_last_checkpoint_naming_a_missing_file_is_refused(tmp_path):
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_7.pth'))
    message = _refused(_config(MAXQ, tmp_path), 'auto')
    assert f"names {str(tmp_path / 'epoch_7.pth')!r}, which cannot be resumed" in message
    assert 'does not exist' in message


def test_no_last_checkpoint_trains_from_scratch_as_mmengine_does(tmp_path):
    assert resolve_resume(_config(MAXQ, tmp_path), 'auto') is None


def _train_tool():
    spec = importlib.util.spec_from_file_location('train_tool', osp.join(REPO, 'tools/train.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_tool_stops_before_writing_anything(tmp_path, synthetic_coco):
    work = tmp_path / 'work'
    work.mkdir()
    ckpt = _saved_by(MAXQ, work / 'epoch_1.pth')
    (work / 'last_checkpoint').write_text(ckpt)
    before = sorted(os.listdir(work))
    with pytest.raises(CliError, match='model.sparsity.m=8 there but 4 here'):
        _train_tool().main([MAXQ, '--work-dir', str(work), '--resume', '--cfg-options',
                            'model.sparsity.m=4',
                            f'train_dataloader.dataset.data_root={synthetic_coco}/'])
    assert sorted(os.listdir(work)) == before


def test_both_tools_share_the_config_builder(tmp_path):
    cfg = build_config(_args(MAXQ, cfg_options={'train_cfg.max_epochs': 3}, launcher='pytorch'))
    assert cfg.work_dir == osp.join('./work_dirs', 'mask-rcnn_r18-tiny-maxq-2of8_fpn_synthetic')
    assert cfg.launcher == 'pytorch' and cfg.train_cfg.max_epochs == 3
    assert build_config(_args(MAXQ, work_dir=str(tmp_path))).work_dir == str(tmp_path)
    for tool in ('train.py', 'test.py'):
        text = open(osp.join(REPO, 'tools', tool)).read()
        assert 'shared_build_config(args)' in text and 'merge_from_dict' not in text, tool


def test_a_complete_archive_with_unreadable_contents_is_refused(tmp_path):
    import zipfile

    ckpt = tmp_path / 'epoch_1.pth'
    with zipfile.ZipFile(ckpt, 'w') as archive:  # a whole zip, but data.pkl is not a pickle
        archive.writestr('archive/data.pkl', b'not a pickle')
        archive.writestr('archive/version', b'3\n')
    message = _refused(_config(MAXQ, tmp_path), str(ckpt))
    assert f'checkpoint {str(ckpt)!r} cannot be read' in message
    assert 'resume from an earlier checkpoint' in message
