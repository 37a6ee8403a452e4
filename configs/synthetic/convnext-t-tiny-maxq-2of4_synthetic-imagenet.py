# ../imagenet/convnext-tiny-maxq-2of4_32xb128_in1k.py shrunk for the CPU: mmpretrain's
# ConvNeXt-T recipe (AdamW, warm-up + cosine, Mixup / CutMix, EMA) and the MaxQ 2:4 hooks with a
# narrow ConvNeXt (channels 32-256, depths 1-1-2-1) on the synthetic ImageNet-format set, two
# epochs (preserve rate 1, then 0). Its backbone.* keys initialise
# ./mask-rcnn_convnext-t-tiny-maxq-2of4-from-classifier_fpn_synthetic.py.
_base_ = ['../imagenet/convnext-tiny-maxq-2of4_32xb128_in1k.py',
          '../_base_/synthetic_imagenet_data.py']

model = dict(
    backbone=dict(arch=dict(_delete_=True, depths=[1, 1, 2, 1], channels=[32, 64, 128, 256])),
    head=dict(num_classes=4, in_channels=256))
custom_hooks = [  # the real config's (EMA kept), the schedule over epoch 0
    dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL'),
    dict(type='SparsityScheduleHook', kind='linear', start=0, end=1, by_epoch=True),
    dict(type='SRSTEDecayHook', decay=0.1, mode='decoupled'),
    dict(type='SparsityLoggerHook', interval=4),
    dict(type='RandomStateHook'),
]
data_preprocessor = dict(num_classes=len(_base_.synthetic_classes))
train_dataloader = _base_.synthetic_train_dataloader
val_dataloader = _base_.synthetic_val_dataloader
test_dataloader = _base_.synthetic_val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=2, val_interval=2)
param_scheduler = _base_.synthetic_param_scheduler
default_hooks = dict(logger=dict(interval=4))
randomness = dict(seed=0)
