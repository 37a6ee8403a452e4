# The real recipe, shrunk: MMDetection's Faster R-CNN R50-FPN settings (frozen stem and layer1,
# frozen BN statistics: frozen_stages=1, norm_eval=True) with a narrow ResNet-50
# (base_channels=16) initialised from a converted sparse ImageNet checkpoint, fine-tuned with
# MaxQ 2:8, full N:M from the first iteration, pruned-weight decay 2e-4: the COCO configs'
# schedule and hooks (configs/_base_/sparsity_runtime.py) on the synthetic set.
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50_fpn.py',
    '../_base_/synthetic_coco_detection.py',
    '../_base_/synthetic_two_stage.py',
    '../_base_/synthetic_schedule.py',  # carries custom_imports
]
custom_hooks = [  # as in ../_base_/sparsity_runtime.py
    dict(type='SparsityScheduleHook', kind='linear', start=0, end=0),
    dict(type='SRSTEDecayHook', decay=2e-4),
    dict(type='SparsityLoggerHook', interval=10),
    dict(type='RandomStateHook'),
]

# Made by tools/convert_checkpoint.py from the paper-layout checkpoint (raw weights).
sparse_imagenet_checkpoint = 'checkpoints/resnet50-tiny_maxq-2of8_imagenet.pth'
width = 16
fpn_channels = 64

model = dict(
    type='SparseDetector',
    detector='FasterRCNN',
    sparsity=dict(method='maxq', n=2, m=8, layers=['backbone.*']),
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        depth=50,
        base_channels=width,
        frozen_stages=1,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=sparse_imagenet_checkpoint)),
    neck=dict(in_channels=[width * 4, width * 8, width * 16, width * 32],
              out_channels=fpn_channels),
    rpn_head=dict(in_channels=fpn_channels, feat_channels=fpn_channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=fpn_channels),
        bbox_head=dict(in_channels=fpn_channels, fc_out_channels=256, num_classes=3)),
    train_cfg=_base_.two_stage_train_cfg,
    test_cfg=_base_.two_stage_test_cfg)

optim_wrapper = dict(optimizer=dict(lr=0.01))
