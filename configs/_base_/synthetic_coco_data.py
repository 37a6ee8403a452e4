# The synthetic set of ./synthetic_coco_instance.py as variables (no dataloader keys), for the
# tiny versions of real COCO configs: those inherit the real config (its dataloaders are COCO's)
# and this file, and point the dataloaders' datasets at the synthetic set with these values.
synthetic_root = 'data/synthetic_coco/'
synthetic_metainfo = dict(classes=('rectangle', 'ellipse', 'triangle'),
                          palette=[(220, 60, 60), (60, 200, 60), (60, 90, 230)])
synthetic_scale = (128, 128)
synthetic_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=synthetic_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
synthetic_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=synthetic_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
synthetic_train = dict(
    data_root=synthetic_root, metainfo=synthetic_metainfo,
    ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
    filter_cfg=dict(filter_empty_gt=True, min_size=4))
synthetic_val = dict(
    data_root=synthetic_root, metainfo=synthetic_metainfo,
    ann_file='annotations/instances_val.json', data_prefix=dict(img='val/'))
synthetic_loader = dict(num_workers=0, persistent_workers=False)
