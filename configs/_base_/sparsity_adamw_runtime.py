# ./sparsity_runtime.py for the detectors whose MMDetection recipe trains with AdamW (Swin and
# ConvNeXt Mask R-CNN: weight decay 0.05): the pruned-weight decay is decoupled, at twice the
# recipe's weight decay (the paper's 2e-4 beside SGD's 1e-4); see "Pruned-weight decay under
# AdamW" in docs/design.md. Everything else as in ./sparsity_runtime.py.
_base_ = ['./sparsity_runtime.py']

custom_hooks = [
    dict(type='SparsityScheduleHook', kind='linear', start=0, end=0),
    dict(type='SRSTEDecayHook', decay=0.1, mode='decoupled'),
    dict(type='SparsityLoggerHook', interval=50),
    dict(type='RandomStateHook'),
    dict(type='DenseStartCheckHook'),
]
