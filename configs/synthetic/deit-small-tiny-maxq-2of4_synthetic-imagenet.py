# ../imagenet/deit-small-maxq-2of4_4xb256_in1k.py shrunk for the CPU: mmpretrain's DeiT-S recipe
# (AdamW, warm-up + cosine, Mixup / CutMix, label smoothing) and the MaxQ 2:4 hooks with a narrow
# ViT (2 layers, embed_dims 64, 16 px patches) on the synthetic ImageNet-format set, two epochs
# (preserve rate 1, then 0).
_base_ = ['../imagenet/deit-small-maxq-2of4_4xb256_in1k.py',
          '../_base_/synthetic_imagenet_data.py']

model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=64, num_layers=2, num_heads=2,
                            feedforward_channels=256), img_size=64),
    head=dict(num_classes=4, in_channels=64))
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
