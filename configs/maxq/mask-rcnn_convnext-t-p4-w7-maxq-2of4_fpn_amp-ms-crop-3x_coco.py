_base_ = ['mmdet::convnext/mask-rcnn_convnext-t-p4-w7_fpn_amp-ms-crop-3x_coco.py']

# MMDetection's ConvNeXt-T Mask R-CNN (mmpretrain's ConvNeXt, AdamW with layer-wise lr decay,
# AMP, multi-scale crop, 3x) with a MaxQ 2:4 backbone initialised from the checkpoint of
# ../imagenet/convnext-tiny-maxq-2of4_32xb128_in1k.py: the 36 pointwise nn.Linear layers and
# the three 2x2 downsample convs 2:4; the stem conv (3 input channels) and the depthwise 7x7
# convs dense. The detector's output norms of stages 0-2 are new (the classifier has one
# after its last stage only).
sparse_imagenet_checkpoint = 'work_dirs/convnext-tiny-maxq-2of4_32xb128_in1k/epoch_300.pth'

# The base's custom_imports (mmpretrain's ConvNeXt) plus mmdet_maxq, and the hooks of
# ../_base_/sparsity_adamw_runtime.py (which cannot be a second base: both set custom_imports).
custom_imports = dict(imports=['mmpretrain.models', 'mmdet_maxq'], allow_failed_imports=False)
custom_hooks = [
    dict(type='SparsityScheduleHook', kind='linear', start=0, end=0),
    dict(type='SRSTEDecayHook', decay=0.1, mode='decoupled'),
    dict(type='SparsityLoggerHook', interval=50),
    dict(type='RandomStateHook'),
    dict(type='DenseStartCheckHook'),
]
model = dict(
    type='SparseDetector',
    detector='MaskRCNN',
    sparsity=dict(method='maxq', n=2, m=4, layers=['backbone.*']),
    backbone=dict(init_cfg=dict(checkpoint=sparse_imagenet_checkpoint)))
pretrained_new_keys = dict(backbone=['norm0.*', 'norm1.*', 'norm2.*'])
