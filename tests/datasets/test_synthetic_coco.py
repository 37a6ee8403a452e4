import filecmp
import json
import os

import pytest

from mmdet_maxq.datasets import CATEGORIES, make_synthetic_coco


def test_same_seed_same_files(tmp_path):
    a = make_synthetic_coco(str(tmp_path / 'a'), num_train=4, num_val=2, seed=3)
    b = make_synthetic_coco(str(tmp_path / 'b'), num_train=4, num_val=2, seed=3)
    c = make_synthetic_coco(str(tmp_path / 'c'), num_train=4, num_val=2, seed=4)
    for split in ('train', 'val'):
        assert filecmp.cmp(a[split], b[split], shallow=False)
        images = sorted(os.listdir(tmp_path / 'a' / split))
        match, mismatch, errors = filecmp.cmpfiles(tmp_path / 'a' / split,
                                                   tmp_path / 'b' / split, images,
                                                   shallow=False)
        assert match == images and not mismatch and not errors
    assert not filecmp.cmp(a['train'], c['train'], shallow=False)


def test_annotations_describe_the_painted_shapes(tmp_path):
    from pycocotools import mask as mask_utils

    files = make_synthetic_coco(str(tmp_path / 'd'), num_train=6, num_val=2, seed=0)
    coco = json.load(open(files['train']))
    assert [c['name'] for c in coco['categories']] == list(CATEGORIES)
    assert len(coco['images']) == 6 and coco['annotations']
    for ann in coco['annotations']:
        image = next(i for i in coco['images'] if i['id'] == ann['image_id'])
        h, w = image['height'], image['width']
        x, y, bw, bh = ann['bbox']
        assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h and ann['iscrowd'] == 0
        rle = mask_utils.merge(mask_utils.frPyObjects(ann['segmentation'], h, w))
        # The polygon rasterised by pycocotools covers (about) the painted area.
        assert mask_utils.area(rle) == pytest.approx(ann['area'], rel=0.15)
        px, py, pw, ph = mask_utils.toBbox(rle)
        assert abs(px - x) <= 2 and abs(py - y) <= 2 and abs(pw - bw) <= 3


def test_coco_dataset_reads_it(tmp_path):
    from mmdet.datasets import CocoDataset
    from mmengine.registry import init_default_scope

    import mmdet_maxq  # noqa: F401

    init_default_scope('mmdet')

    root = tmp_path / 'e'
    make_synthetic_coco(str(root), num_train=4, num_val=2, seed=1)
    dataset = CocoDataset(
        data_root=str(root), ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'), metainfo=dict(classes=CATEGORIES),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                  dict(type='PackDetInputs')])
    assert len(dataset) == 4
    sample = dataset[0]
    gt = sample['data_samples'].gt_instances
    assert sample['inputs'].shape == (3, 128, 128)
    assert len(gt) >= 1 and gt.masks.masks.shape[0] == len(gt)
    assert int(gt.labels.max()) < len(CATEGORIES)


def test_refuses_existing_and_bad_sizes(tmp_path):
    root = tmp_path / 'f'
    make_synthetic_coco(str(root), num_train=1, num_val=1)
    stamp = os.path.getmtime(root / 'annotations' / 'instances_train.json')
    with pytest.raises(FileExistsError, match='overwrite'):
        make_synthetic_coco(str(root), num_train=1, num_val=1)
    assert os.path.getmtime(root / 'annotations' / 'instances_train.json') == stamp
    with pytest.raises(ValueError, match='num_train'):
        make_synthetic_coco(str(tmp_path / 'g'), num_train=0)
    assert not (tmp_path / 'g').exists()
    # No staging folder is left behind by either failure.
    assert sorted(p.name for p in tmp_path.iterdir()) == ['f']
