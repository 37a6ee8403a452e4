# ../maxq/mask-rcnn_convnext-t-p4-w7-maxq-2of4_fpn_amp-ms-crop-3x_coco.py shrunk for the CPU:
# MMDetection's ConvNeXt-T Mask R-CNN settings (mmpretrain's ConvNeXt, AdamW with layer-wise lr
# decay, warm-up) and the MaxQ 2:4 hooks, with the narrow ConvNeXt of
# ./convnext-t-tiny-maxq-2of4_synthetic-imagenet.py initialised from that classifier's
# checkpoint, FPN and heads at 64 channels, on the synthetic COCO set at one 128 px scale (the
# base's multi-scale crop targets 480-800 px images). Plain OptimWrapper: AMP needs a GPU.
_base_ = [
    '../maxq/mask-rcnn_convnext-t-p4-w7-maxq-2of4_fpn_amp-ms-crop-3x_coco.py',
    '../_base_/synthetic_coco_data.py',
    '../_base_/synthetic_two_stage.py',
]

sparse_imagenet_checkpoint = 'work_dirs/convnext-t-tiny-maxq-2of4_synthetic-imagenet/epoch_2.pth'
fpn_channels = 64
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, depths=[1, 1, 2, 1], channels=[32, 64, 128, 256]),
        init_cfg=dict(checkpoint=sparse_imagenet_checkpoint)),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=fpn_channels),
    rpn_head=dict(in_channels=fpn_channels, feat_channels=fpn_channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=fpn_channels),
        bbox_head=dict(in_channels=fpn_channels, fc_out_channels=256, num_classes=3),
        mask_roi_extractor=dict(out_channels=fpn_channels),
        mask_head=dict(in_channels=fpn_channels, conv_out_channels=fpn_channels,
                       num_classes=3)),
    train_cfg=_base_.two_stage_train_cfg,
    test_cfg=_base_.two_stage_test_cfg)

train_dataloader = dict(batch_size=2, **_base_.synthetic_loader,
                        dataset=dict(**_base_.synthetic_train,
                                     pipeline=_base_.synthetic_train_pipeline))
val_dataloader = dict(batch_size=2, **_base_.synthetic_loader,
                      dataset=dict(**_base_.synthetic_val,
                                   pipeline=_base_.synthetic_test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=_base_.synthetic_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
optim_wrapper = dict(type='OptimWrapper')
train_cfg = dict(max_epochs=1, val_interval=1)
# The base's linear warm-up over 4 iterations instead of 1000 (its steps at epochs 27 and 33
# are past the single epoch).
param_scheduler = [dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=4)]
default_hooks = dict(logger=dict(interval=2))
