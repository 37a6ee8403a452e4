"""The synthetic ImageNet-format set: deterministic, read by mmpretrain's own datasets."""
import hashlib
import os

import pytest
from mmengine.registry import DefaultScope
from mmpretrain.registry import DATASETS

import mmdet_maxq  # noqa: F401
from mmdet_maxq.datasets import make_synthetic_imagenet
from ..conftest import run_tool


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    """Build from mmpretrain's registries, leaving the default scope as it was afterwards."""
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield


def digest(root):
    h = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            h.update(os.path.relpath(path, root).encode())
            with open(path, 'rb') as f:
                h.update(f.read())
    return h.hexdigest()


def test_same_arguments_same_bytes_and_mmpretrain_reads_it(tmp_path):
    files = make_synthetic_imagenet(str(tmp_path / 'a'), num_classes=3, train_per_class=4,
                                    val_per_class=2, image_size=24, seed=5)
    make_synthetic_imagenet(str(tmp_path / 'b'), num_classes=3, train_per_class=4,
                            val_per_class=2, image_size=24, seed=5)
    assert digest(tmp_path / 'a') == digest(tmp_path / 'b')
    make_synthetic_imagenet(str(tmp_path / 'c'), num_classes=3, train_per_class=4,
                            val_per_class=2, image_size=24, seed=6)
    assert digest(tmp_path / 'a') != digest(tmp_path / 'c')
    assert open(files['classes']).read().split() == ['class_00', 'class_01', 'class_02']
    for split, count in (('train', 12), ('val', 6)):
        dataset = DATASETS.build(dict(
            type='CustomDataset', data_root=str(tmp_path / 'a'), ann_file=f'meta/{split}.txt',
            data_prefix=split, classes=['class_00', 'class_01', 'class_02'],
            pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')]))
        assert len(dataset) == count
        labels = sorted({dataset.get_gt_labels()[i] for i in range(count)})
        assert labels == [0, 1, 2]
        sample = dataset[0]
        assert tuple(sample['inputs'].shape) == (3, 24, 24)
        # The class folder and the label agree.
        info = dataset.get_data_info(count - 1)
        assert f'class_{info["gt_label"]:02d}' in info['img_path']


def test_bad_arguments_and_existing_folder(tmp_path):
    with pytest.raises(ValueError, match='num_classes must be an integer between 2 and 16'):
        make_synthetic_imagenet(str(tmp_path / 'x'), num_classes=1)
    with pytest.raises(ValueError, match='image_size must be an integer >= 16'):
        make_synthetic_imagenet(str(tmp_path / 'x'), image_size=8)
    assert not (tmp_path / 'x').exists()
    (tmp_path / 'y').mkdir()
    proc = run_tool(['tools/misc/make_synthetic_imagenet.py', str(tmp_path / 'y')], check=False)
    assert proc.returncode != 0 and 'exists; pass overwrite=True (--overwrite)' in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert os.listdir(tmp_path / 'y') == []
