# The synthetic ImageNet-format set (4 classes, 64 px; tools/misc/make_synthetic_imagenet.py)
# and a two-epoch version of mmpretrain's AdamW schedule (one warm-up epoch, then cosine), as
# variables only (no top-level key of a real config), so that a tiny classifier can inherit its
# real config and this file and set `train_dataloader = _base_.synthetic_train_dataloader`, ...
_classes = ['class_00', 'class_01', 'class_02', 'class_03']
_root = 'data/synthetic_imagenet/'
synthetic_classes = _classes
synthetic_train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=_root,
                 ann_file='meta/train.txt', data_prefix='train', classes=_classes,
                 pipeline=[dict(type='LoadImageFromFile'),
                           dict(type='RandomFlip', prob=0.5, direction='horizontal'),
                           dict(type='PackInputs')]))
synthetic_val_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=_root,
                 ann_file='meta/val.txt', data_prefix='val', classes=_classes,
                 pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')]))
synthetic_param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1),
]
