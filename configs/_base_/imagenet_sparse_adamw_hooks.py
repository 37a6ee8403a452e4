# The sparsity hooks of the transformer-family ImageNet configs (Swin, ConvNeXt, DeiT), which
# keep mmpretrain's own recipe (AdamW, weight decay 0.05, 300 epochs, warm-up + cosine):
# `custom_hooks = _base_.maxq_adamw_hooks` (ConvNeXt adds them to its EMAHook).
custom_imports = dict(imports=['mmdet_maxq'], allow_failed_imports=False)

maxq_adamw_hooks = [
    # Incremental sparsity per epoch, linear over the first quarter of the 300 epochs (the
    # paper's ResNet recipe: epochs 0-30 of 120); epochs 75-300 train the full N:M model.
    dict(type='SparsityScheduleHook', kind='linear', start=0, end=75, by_epoch=True),
    # The pruned-weight decay, decoupled as AdamW's own weight decay (Adam's 1/sqrt(v) would
    # rescale a term added to the gradient per weight), at twice the recipe's weight decay:
    # the paper's ratio (2e-4 beside SGD's 1e-4). See "Pruned-weight decay under AdamW" in
    # docs/design.md.
    dict(type='SRSTEDecayHook', decay=0.1, mode='decoupled'),
    dict(type='SparsityLoggerHook', interval=100),
    dict(type='RandomStateHook'),
]
