# ../maxq/mask-rcnn_swin-t-p4-w7-maxq-2of4_fpn_1x_coco.py shrunk for the CPU: MMDetection's Swin-T
# Mask R-CNN settings (its SwinTransformer, AdamW, 1x schedule's warm-up) and the MaxQ 2:4 hooks,
# with the narrow Swin of ./swin-t-tiny-maxq-2of4_synthetic-imagenet.py (embed_dims 32, window 2)
# initialised from that classifier's checkpoint, FPN and heads at 64 channels, on the synthetic
# COCO set (128 px). with_cp=True: the blocks run under gradient checkpointing (the recomputed
# forward reuses the held masks).
_base_ = [
    '../maxq/mask-rcnn_swin-t-p4-w7-maxq-2of4_fpn_1x_coco.py',
    '../_base_/synthetic_coco_data.py',
    '../_base_/synthetic_two_stage.py',
]

sparse_imagenet_checkpoint = 'work_dirs/swin-t-tiny-maxq-2of4_synthetic-imagenet/epoch_2.pth'
fpn_channels = 64
model = dict(
    backbone=dict(
        embed_dims=32,
        depths=[2, 2, 2, 2],
        num_heads=[1, 2, 4, 8],
        window_size=2,
        pretrain_img_size=64,
        with_cp=True,
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
train_cfg = dict(max_epochs=1, val_interval=1)
# The base's linear warm-up over 4 iterations instead of 1000 (its steps at epochs 8 and 11
# are past the single epoch).
param_scheduler = [dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=4)]
default_hooks = dict(logger=dict(interval=2))
