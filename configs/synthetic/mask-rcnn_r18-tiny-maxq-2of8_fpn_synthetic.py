# The README's main job: MaxQ 2:8 on the narrow ResNet-18 Mask R-CNN of the synthetic set,
# incremental sparsity over epochs 0-4 of 6 (cubic), then full N:M for the last two epochs.
_base_ = ['./mask-rcnn_r18-tiny_fpn_synthetic.py']  # carries custom_imports

model = dict(_delete_=True, type='SparseDetector', architecture=_base_.model,
             sparsity=dict(method='maxq', n=2, m=8, layers=['backbone.*']))
custom_hooks = [
    dict(type='SparsityScheduleHook', kind='cubic', start=0, end=4, by_epoch=True),
    dict(type='SparsityLoggerHook', interval=10),
    dict(type='RandomStateHook'),
]
