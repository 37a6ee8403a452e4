# MaxQ 2:8 in a one-stage detector: RetinaNet with the same narrow ResNet-18 (base_channels=16)
# as the Mask R-CNN synthetic configs, trained from scratch on the synthetic set (boxes only).
# Same wrapper, hooks and schedule: incremental sparsity over epochs 0-4 of 6 (cubic).
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    '../_base_/synthetic_coco_detection.py',
    '../_base_/synthetic_schedule.py',
    '../_base_/synthetic_sparsity_hooks.py',
]

width = 16
fpn_channels = 64
model = dict(
    type='SparseDetector',
    detector='RetinaNet',
    sparsity=dict(method='maxq', n=2, m=8, layers=['backbone.*']),
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(depth=18, base_channels=width, frozen_stages=-1, norm_eval=False,
                  init_cfg=None),
    neck=dict(in_channels=[width, width * 2, width * 4, width * 8], out_channels=fpn_channels),
    bbox_head=dict(num_classes=3, in_channels=fpn_channels, feat_channels=fpn_channels,
                   stacked_convs=2),
    test_cfg=dict(nms_pre=300, max_per_img=20))

optim_wrapper = dict(optimizer=dict(lr=0.01))
