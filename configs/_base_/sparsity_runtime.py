# Shared by the COCO sparse configs: registrations, the schedule, the pruned-weight decay and
# the logging. `custom_imports` makes a config self-contained: MMDetection's own tools/train.py
# and `mim train mmdet` import mmdet_maxq (SparseDetector, hooks, checkpoint-loading fix).
custom_imports = dict(imports=['mmdet_maxq'], allow_failed_imports=False)

custom_hooks = [
    # The backbone comes from a sparse ImageNet model that is already N:M (its forward was
    # W * S(W) at preserve rate 0), so the detector is fully N:M from the first iteration
    # (start == end == 0): its first forward equals the ImageNet model's. The *-incremental
    # configs start from a dense backbone and let the preserve rate fall from 1 to 0 instead.
    dict(type='SparsityScheduleHook', kind='linear', start=0, end=0),
    # The paper's training loop: decay of the pruned weights, lambda 2e-4, on every sparse
    # layer (MaxQ too), after AMP unscaling and before the optimizer step.
    dict(type='SRSTEDecayHook', decay=2e-4),
    dict(type='SparsityLoggerHook', interval=50),
    dict(type='RandomStateHook'),
    # Warns when the backbone was loaded without N:M masks (a dense checkpoint) although the
    # schedule above makes it fully N:M at once.
    dict(type='DenseStartCheckHook'),
]
