# The paper's sparse ImageNet recipe, shared by configs/imagenet/: it takes the place of
# mmpretrain's schedule file beside mmpretrain's model and dataset bases. 120 epochs, SGD lr 0.1
# per 256 images (8 GPUs x 32), momentum 0.9, no nesterov, weight decay 1e-4 with none on BN, no
# warm-up, cosine LR, AMP, from scratch with BN in train mode. `custom_imports` registers
# SparseClassifier and the hooks, so mmpretrain's own tools/train.py and `mim train mmpretrain`
# run these configs too.
_base_ = ['mmpretrain::_base_/default_runtime.py']

custom_imports = dict(imports=['mmdet_maxq'], allow_failed_imports=False)

train_cfg = dict(by_epoch=True, max_epochs=120, val_interval=1)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=False),
    paramwise_cfg=dict(norm_decay_mult=0.0))
param_scheduler = [dict(type='CosineAnnealingLR', T_max=120, by_epoch=True, begin=0, end=120)]
auto_scale_lr = dict(base_batch_size=256)

custom_hooks = [
    # Incremental sparsity per epoch: the share of blocks exempt from N:M falls linearly from
    # 1 to 0 over epochs 0-30; epochs 30-120 train the full N:M model.
    dict(type='SparsityScheduleHook', kind='linear', start=0, end=30, by_epoch=True),
    # Pruned-weight decay 2e-4 on every sparse layer (MaxQ too), after AMP unscaling.
    dict(type='SRSTEDecayHook', decay=2e-4),
    dict(type='SparsityLoggerHook', interval=100),
    dict(type='RandomStateHook'),
]
