# Dense baseline: a narrow ResNet-18 (base_channels=16) Mask R-CNN trained from scratch on the
# synthetic set, small enough for a few hundred CPU iterations.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    '../_base_/synthetic_coco_instance.py',
    '../_base_/synthetic_two_stage.py',
    '../_base_/synthetic_schedule.py',
]

width = 16
fpn_channels = 64
model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        depth=18,
        base_channels=width,
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[width, width * 2, width * 4, width * 8],
              out_channels=fpn_channels),
    rpn_head=dict(in_channels=fpn_channels, feat_channels=fpn_channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=fpn_channels),
        bbox_head=dict(in_channels=fpn_channels, fc_out_channels=256, num_classes=3),
        mask_roi_extractor=dict(out_channels=fpn_channels),
        mask_head=dict(in_channels=fpn_channels, conv_out_channels=fpn_channels,
                       num_classes=3)),
    train_cfg=_base_.two_stage_train_cfg,
    test_cfg=_base_.two_stage_test_cfg)
