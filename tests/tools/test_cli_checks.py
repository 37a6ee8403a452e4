"""The tools' input checks accept what MMDetection accepts (mmdet_maxq/cli.py).

URLs and remote paths are MMEngine's to read; legacy (non-zip) torch checkpoints load with
``torch.load(weights_only=True)``; remote data roots are read through file backends. Local
paths are still checked, with one clear line per problem.
"""
import builtins
import os
import os.path as osp
import re
import zipfile

import pytest
import torch
from mmengine.config import Config

from mmdet_maxq.cli import CliError, check_checkpoint_file, check_data_roots, load_config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SYNTHETIC = 'configs/synthetic/mask-rcnn_r18-tiny-maxq-2of8_fpn_synthetic.py'
URLS = [
    'https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/r50.pth',
    'http://example.com/ckpt.pth',
    'open-mmlab://resnet50_v1c',
    'torchvision://resnet50',
    's3://bucket/work_dirs/epoch_12.pth',
    'petrel://bucket/ckpt.pth',
    'pavi://model/123',
]


def refused(func, *args) -> str:
    with pytest.raises(CliError) as exc:
        func(*args)
    message = exc.value.message
    assert '\n' not in message
    return message


@pytest.fixture
def no_local_io(monkeypatch):
    """Any local file access during the check fails the test."""

    def boom(*args, **kwargs):
        raise AssertionError(f'touched the local disk: {args}')

    for name in ('exists', 'isfile', 'isdir'):
        monkeypatch.setattr(os.path, name, boom)
    monkeypatch.setattr(builtins, 'open', boom)


@pytest.mark.parametrize('url', URLS)
def test_checkpoint_urls_pass_untouched(url, no_local_io):
    assert check_checkpoint_file(url) is None


def test_config_load_from_url_is_kept():
    cfg = load_config(osp.join(REPO, SYNTHETIC))
    cfg.load_from = URLS[0]
    check_checkpoint_file(cfg.load_from)
    assert cfg.load_from == URLS[0]


def test_legacy_checkpoint_accepted(tmp_path):
    path = tmp_path / 'legacy.pth'
    state = {'state_dict': {'w': torch.arange(6.0).reshape(2, 3)}, 'meta': {'epoch': 3}}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    check_checkpoint_file(str(path))
    loaded = torch.load(path, map_location='cpu', weights_only=True)  # what MMEngine calls
    assert torch.equal(loaded['state_dict']['w'], state['state_dict']['w'])


def test_zip_checkpoint_and_home_path_accepted(tmp_path, monkeypatch):
    torch.save({'w': torch.ones(2)}, tmp_path / 'new.pth')
    check_checkpoint_file(str(tmp_path / 'new.pth'))
    monkeypatch.setenv('HOME', str(tmp_path))
    check_checkpoint_file('~/new.pth')  # MMEngine's loader expands ~ as well


@pytest.fixture
def zip_bytes(tmp_path):
    path = tmp_path / 'ok.pth'
    torch.save({'w': torch.randn(64, 64)}, path)
    return path.read_bytes()


def test_truncated_zip_refused(tmp_path, zip_bytes):
    path = tmp_path / 'cut.pth'
    path.write_bytes(zip_bytes[:len(zip_bytes) // 2])
    msg = refused(check_checkpoint_file, str(path))
    assert str(path) in msg and 'damaged zip archive' in msg and 'truncated' in msg


def test_zip_that_is_not_a_checkpoint_refused(tmp_path):
    path = tmp_path / 'notes.pth'
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('notes.txt', 'hello')
    msg = refused(check_checkpoint_file, str(path))
    assert str(path) in msg and 'not a PyTorch checkpoint' in msg and 'data.pkl' in msg


@pytest.mark.parametrize('content', [
    bytes(range(256)) * 8,  # random-looking bytes
    b'\x80\x02' + bytes(range(200)),  # a pickle opcode, then garbage
    b'',
])
def test_random_bytes_refused(tmp_path, content):
    path = tmp_path / 'junk.pth'
    path.write_bytes(content)
    msg = refused(check_checkpoint_file, str(path))
    assert str(path) in msg and 'not a PyTorch checkpoint' in msg
    assert 'neither a zip archive nor the legacy torch.save format' in msg


def test_missing_and_directory_refused(tmp_path, monkeypatch):
    assert 'does not exist' in refused(check_checkpoint_file, str(tmp_path / 'nope.pth'))
    assert 'not a readable file' in refused(check_checkpoint_file, str(tmp_path))
    assert 'does not exist' in refused(check_checkpoint_file, 'relative/no://t-a-url.pth')
    monkeypatch.setenv('HOME', str(tmp_path))
    msg = refused(check_checkpoint_file, '~/nope.pth')  # names the path it looked at
    assert f"'{tmp_path / 'nope.pth'}' does not exist" in msg


def _cfg(train_dataset, val_dataset=None, **loader):
    cfg = dict(train_dataloader=dict(dataset=train_dataset, **loader))
    if val_dataset is not None:
        cfg['val_dataloader'] = dict(dataset=val_dataset)
    return Config(cfg)


@pytest.mark.parametrize('dataset', [
    dict(data_root='s3://bucket/coco/', ann_file='annotations/instances_train2017.json'),
    dict(data_root='petrel://coco/', ann_file='annotations/train.json'),
    dict(data_root='data/missing_coco/', ann_file='annotations/train.json',
         backend_args=dict(backend='petrel', path_mapping={'data/': 's3://openmmlab/'})),
    dict(type='RepeatDataset', times=2,
         dataset=dict(data_root='s3://bucket/coco/', ann_file='a.json')),
])
def test_remote_data_roots_accepted(dataset):
    check_data_roots(_cfg(dataset), ['train_dataloader'])


def test_remote_ann_file_with_local_root_accepted(tmp_path):
    check_data_roots(_cfg(dict(data_root=str(tmp_path), ann_file='s3://bucket/train.json')),
                     ['train_dataloader'])


def test_loader_backend_args_accepted():
    cfg = _cfg(dict(data_root='data/missing/', ann_file='a.json'),
               backend_args=dict(backend='petrel'))
    check_data_roots(cfg, ['train_dataloader'])


def test_local_missing_still_refused_after_remote(tmp_path):
    cfg = _cfg(dict(data_root='s3://bucket/coco/', ann_file='a.json'),
               dict(data_root=str(tmp_path / 'missing'), ann_file='val.json'))
    msg = refused(check_data_roots, cfg, ['train_dataloader', 'val_dataloader'])
    assert msg.startswith('val_dataloader.dataset.data_root') and 'missing' in msg
    (tmp_path / 'missing').mkdir()
    msg = refused(check_data_roots, cfg, ['train_dataloader', 'val_dataloader'])
    assert 'val_dataloader.dataset.ann_file' in msg and 'val.json' in msg


def test_config_paths_named_in_cli_exist():
    source = open(osp.join(REPO, 'mmdet_maxq', 'cli.py')).read()
    named = re.findall(r'configs/[\w./-]+\.py', source)
    assert named, 'cli.py names no example config'
    for path in named:
        assert osp.isfile(osp.join(REPO, path)), f'cli.py names {path}, which does not exist'
    assert 'does not exist' in refused(load_config, 'configs/no_such_config.py')
