# ../imagenet/swin-tiny-maxq-2of4_16xb64_in1k.py shrunk for the CPU: mmpretrain's Swin-T recipe
# (AdamW, warm-up + cosine, Mixup / CutMix, label smoothing, gradient clipping) and the MaxQ 2:4
# hooks (decoupled pruned-weight decay) with a narrow Swin (embed_dims 32, window 2) on the
# synthetic ImageNet-format set (../_base_/synthetic_imagenet_data.py, 64 px), two epochs:
# preserve rate 1 (epoch 0), then 0, so the last checkpoint is exactly 2:4. Its backbone.* keys
# initialise ./mask-rcnn_swin-t-tiny-maxq-2of4-from-classifier_fpn_synthetic.py.
_base_ = ['../imagenet/swin-tiny-maxq-2of4_16xb64_in1k.py',
          '../_base_/synthetic_imagenet_data.py']

model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8]),
        img_size=64,
        window_size=2),
    head=dict(num_classes=4, in_channels=256))
custom_hooks = [  # the real config's, the schedule over epoch 0
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
