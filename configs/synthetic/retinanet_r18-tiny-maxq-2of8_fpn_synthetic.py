# MaxQ 2:8 in a one-stage detector: RetinaNet with the same narrow ResNet-18 (base_channels=16)
# as the Mask R-CNN synthetic configs, trained from scratch on the synthetic set (boxes only).
# Same wrapper, hooks and schedule: incremental sparsity over epochs 0-4 of 6 (cubic).
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    '../_base_/synthetic_coco_instance.py',
    '../_base_/synthetic_schedule.py',
]

width = 16
fpn_channels = 64
model = dict(_delete_=True, type='SparseDetector', architecture=_base_.model,
             sparsity=dict(method='maxq', n=2, m=8, layers=['backbone.*']))
model['architecture']['data_preprocessor']['pad_size_divisor'] = 32
model['architecture']['backbone'].update(
    depth=18, base_channels=width, frozen_stages=-1, norm_eval=False, init_cfg=None)
model['architecture']['neck'].update(
    in_channels=[width, width * 2, width * 4, width * 8], out_channels=fpn_channels)
model['architecture']['bbox_head'].update(
    num_classes=3, in_channels=fpn_channels, feat_channels=fpn_channels, stacked_convs=2)
model['architecture']['test_cfg'].update(nms_pre=300, max_per_img=20)

# Boxes only: no masks in the pipelines, box AP only.
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=_base_.backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=_base_.image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=_base_.backend_args),
    dict(type='Resize', scale=_base_.image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(metric='bbox')
test_evaluator = val_evaluator

custom_hooks = [
    dict(type='SparsityScheduleHook', kind='cubic', start=0, end=4, by_epoch=True),
    dict(type='SparsityLoggerHook', interval=10),
    dict(type='RandomStateHook'),
]

optim_wrapper = dict(optimizer=dict(lr=0.01))
