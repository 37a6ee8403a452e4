# ../maxq/dino-4scale_r50-maxq-2of4_8xb2-12e_coco.py shrunk for the CPU: MMDetection's DINO
# (two-stage, box refinement, denoising queries, AdamW with the backbone at lr_mult 0.1,
# gradient clipping) with MaxQ 2:4 on the backbone and on the encoder / decoder linear layers.
# embed_dims stays 256 (DINO's decoder hard-codes 128 sine features per axis); the transformer
# has 1 encoder and 2 decoder layers with 256-wide FFNs, 30 queries, 10 denoising queries; the
# ResNet-50 is narrow (base_channels 16) and starts from scratch; synthetic COCO set, boxes.
_base_ = [
    '../maxq/dino-4scale_r50-maxq-2of4_8xb2-12e_coco.py',
    '../_base_/synthetic_coco_data.py',
]

width = 16
model = dict(
    num_queries=30,
    backbone=dict(base_channels=width, init_cfg=None),
    neck=dict(in_channels=[width * 8, width * 16, width * 32]),
    encoder=dict(num_layers=1, layer_cfg=dict(ffn_cfg=dict(feedforward_channels=256))),
    decoder=dict(num_layers=2, layer_cfg=dict(ffn_cfg=dict(feedforward_channels=256))),
    bbox_head=dict(num_classes=3),
    dn_cfg=dict(group_cfg=dict(num_dn_queries=10)),
    test_cfg=dict(max_per_img=20))

train_dataloader = dict(
    batch_size=2, **_base_.synthetic_loader,
    dataset=dict(**_base_.synthetic_train, pipeline=[
        dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
        dict(type='Resize', scale=_base_.synthetic_scale, keep_ratio=True),
        dict(type='RandomFlip', prob=0.5), dict(type='PackDetInputs')]))
val_dataloader = dict(
    batch_size=2, **_base_.synthetic_loader,
    dataset=dict(**_base_.synthetic_val, pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=_base_.synthetic_scale, keep_ratio=True),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='PackDetInputs',
             meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=_base_.synthetic_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=2))
