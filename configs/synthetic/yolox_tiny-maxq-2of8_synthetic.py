# MaxQ 2:8 in YOLOX: MMDetection's yolox_tiny settings (CSPDarknet + YOLOXPAFPN, Mosaic /
# RandomAffine data, YOLOXModeSwitchHook for the last epoch, EMAHook with buffers) shrunk for
# the synthetic set: narrower (widen_factor 0.125), 128 px, 3 classes. The sparse model is the
# YOLOX detector itself, so MMDetection's hooks that reach into it (model.bbox_head) work, and
# validation runs with the EMA weights and masks recomputed from them.
_base_ = ['mmdet::yolox/yolox_tiny_8xb8-300e_coco.py']
custom_imports = dict(imports=['mmdet_maxq'], allow_failed_imports=False)

# The synthetic set (tools/misc/make_synthetic_coco.py), as in ../_base_/synthetic_coco_instance.py
# (a base of its own would clash with the YOLOX config's data settings).
data_root = 'data/synthetic_coco/'
metainfo = dict(classes=('rectangle', 'ellipse', 'triangle'),
                palette=[(220, 60, 60), (60, 200, 60), (60, 90, 230)])

widen = 0.125  # channels 8, 16, 32, 64, 128: multiples of M=8 except the 12-channel Focus stem
image_scale = (128, 128)
model = dict(
    type='SparseDetector',
    detector='YOLOX',
    sparsity=dict(method='maxq', n=2, m=8, layers=['backbone.*']),
    data_preprocessor=dict(batch_augments=None),
    backbone=dict(widen_factor=widen),
    neck=dict(in_channels=[32, 64, 128], out_channels=32),
    bbox_head=dict(num_classes=3, in_channels=32, feat_channels=32),
    test_cfg=dict(score_thr=0.01, max_per_img=20))

train_pipeline = [
    dict(type='Mosaic', img_scale=image_scale, pad_val=114.0),
    dict(type='RandomAffine', scaling_ratio_range=(0.5, 1.5),
         border=(-image_scale[0] // 2, -image_scale[1] // 2)),
    dict(type='YOLOXHSVRandomAug'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='Pad', pad_to_square=True, pad_val=dict(img=(114.0, 114.0, 114.0))),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=False),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='Pad', pad_to_square=True, pad_val=dict(img=(114.0, 114.0, 114.0))),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    _delete_=True,
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='MultiImageMixDataset',
        dataset=dict(
            type='CocoDataset',
            data_root=data_root,
            metainfo=metainfo,
            ann_file='annotations/instances_train.json',
            data_prefix=dict(img='train/'),
            pipeline=[dict(type='LoadImageFromFile', backend_args=None),
                      dict(type='LoadAnnotations', with_bbox=True)],
            filter_cfg=dict(filter_empty_gt=True, min_size=4)),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline,
                 ann_file='annotations/instances_val.json', data_prefix=dict(img='val/')))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

max_epochs = 2
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20)]
default_hooks = dict(logger=dict(type='LoggerHook', interval=5),
                     checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2))
randomness = dict(seed=0, deterministic=False)
auto_scale_lr = dict(enable=False, base_batch_size=2)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=True),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
custom_hooks = [
    # MMDetection's YOLOX hooks (priorities as in its config): the last epoch switches off
    # Mosaic/RandomAffine and turns on the L1 loss in model.bbox_head.
    dict(type='YOLOXModeSwitchHook', num_last_epochs=1, priority=48),
    dict(type='SyncNormHook', priority=48),
    dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=0.0001, update_buffers=True,
         priority=49),
    dict(type='SparsityScheduleHook', kind='linear', start=0, end=0),
    dict(type='SRSTEDecayHook', decay=2e-4),
    dict(type='SparsityLoggerHook', interval=5),
    dict(type='RandomStateHook'),
]
