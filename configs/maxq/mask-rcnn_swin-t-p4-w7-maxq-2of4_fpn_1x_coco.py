_base_ = [
    'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py',
    '../_base_/sparsity_adamw_runtime.py',
]

# MMDetection's Swin-T Mask R-CNN (its own SwinTransformer, AdamW, 1x) with a MaxQ 2:4 backbone
# initialised from the checkpoint of ../imagenet/swin-tiny-maxq-2of4_16xb64_in1k.py: every
# attention qkv / proj, FFN layer and PatchMerging reduction 2:4 (51 nn.Linear), the patch
# embedding conv (3 input channels) dense. mmpretrain's and MMDetection's Swin have the same
# keys and shapes: the classifier's backbone.* keys load as they are (convert_weights=False;
# True converts the official Swin repository's layout). The detector's output norms of stages
# 0-2 are new (the classifier has one after its last stage only).
sparse_imagenet_checkpoint = 'work_dirs/swin-tiny-maxq-2of4_16xb64_in1k/epoch_300.pth'

model = dict(
    type='SparseDetector',
    detector='MaskRCNN',
    sparsity=dict(method='maxq', n=2, m=4, layers=['backbone.*']),
    backbone=dict(
        convert_weights=False,
        init_cfg=dict(type='Pretrained', prefix='backbone.',
                      checkpoint=sparse_imagenet_checkpoint)))
pretrained_new_keys = dict(backbone=['norm0.*', 'norm1.*', 'norm2.*'])
