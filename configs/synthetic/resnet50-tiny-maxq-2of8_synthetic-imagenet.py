# Sparse ImageNet pretraining, shrunk for the CPU: the ResNet-50 MaxQ 2:8 recipe of
# ../imagenet/resnet50-maxq-2of8_8xb32_in1k.py with a narrow ResNet-50 (base and stem width 16,
# the width of faster-rcnn_r50-tiny-maxq-2of8_fpn_synthetic.py, which its checkpoint
# initialises) on the synthetic ImageNet-format set of tools/misc/make_synthetic_imagenet.py
# (4 classes, 32 px). Two epochs: the preserve rate falls from 1 (epoch 0) to 0 (epoch 1), so
# the last checkpoint is exactly N:M. No AMP (CPU), num_workers=0.
_base_ = ['../imagenet/resnet50-maxq-2of8_8xb32_in1k.py']

data_root = 'data/synthetic_imagenet/'
classes = ['class_00', 'class_01', 'class_02', 'class_03']
width = 16

model = dict(
    backbone=dict(base_channels=width, stem_channels=width),
    head=dict(num_classes=len(classes), in_channels=width * 32, topk=(1, )))
data_preprocessor = dict(num_classes=len(classes))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]


train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root,
                 ann_file='meta/train.txt', data_prefix='train', classes=classes,
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root,
                 ann_file='meta/val.txt', data_prefix='val', classes=classes,
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=2, val_interval=2)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-4, nesterov=False),
    paramwise_cfg=dict(norm_decay_mult=0.0))
param_scheduler = [dict(type='CosineAnnealingLR', T_max=2, by_epoch=True, begin=0, end=2)]
custom_hooks = [
    dict(type='SparsityScheduleHook', kind='linear', start=0, end=1, by_epoch=True),
    dict(type='SRSTEDecayHook', decay=2e-4),
    dict(type='SparsityLoggerHook', interval=4),
    dict(type='RandomStateHook'),
]
default_hooks = dict(logger=dict(interval=4))
randomness = dict(seed=0)
