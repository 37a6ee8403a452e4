_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', '../_base_/sparsity_runtime.py']

# MaxQ 2:8 from MMDetection's dense ImageNet ResNet-50 (the base config's torchvision://resnet50
# init): a dense backbone is not N:M yet, so sparsity is introduced incrementally, as the
# paper's ImageNet recipe does: the share of blocks exempt from N:M falls from 1 to 0 over
# epochs 0-8 (cubic), and epochs 8-12 train the full N:M model.
model = dict(
    type='SparseDetector',
    detector='FasterRCNN',
    sparsity=dict(method='maxq', n=2, m=8, layers=['backbone.*']))

custom_hooks = [
    dict(type='SparsityScheduleHook', kind='cubic', start=0, end=8, by_epoch=True),
    dict(type='SRSTEDecayHook', decay=2e-4),
    dict(type='SparsityLoggerHook', interval=50),
    dict(type='RandomStateHook'),
]
