# For a backbone that starts dense (MMDetection's torchvision://resnet50): sparsity comes
# incrementally, as in the paper's ImageNet recipe. The share of blocks exempt from N:M falls
# from 1 to 0 over epochs 0-8 (cubic); epochs 8-12 train the full N:M model. Everything else as
# in ./sparsity_runtime.py.
_base_ = ['./sparsity_runtime.py']

custom_hooks = [
    dict(type='SparsityScheduleHook', kind='cubic', start=0, end=8, by_epoch=True),
    # Even at preserve rate 1 MaxQ's soft multipliers (1 + F + P) amplify the convs' outputs,
    # while MMDetection's frozen BN (norm_eval=True) keeps the dense model's statistics: before
    # the first iteration, re-estimate them on the sparse forward over 50 training batches.
    dict(type='BNRecalibrationHook', num_batches=50),
    dict(type='SRSTEDecayHook', decay=2e-4),
    dict(type='SparsityLoggerHook', interval=50),
    dict(type='RandomStateHook'),
]
