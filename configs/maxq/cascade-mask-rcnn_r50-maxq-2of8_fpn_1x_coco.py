_base_ = [
    'mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py',
    '../_base_/sparsity_runtime.py',
]

# A 2:8 sparse ImageNet ResNet-50 converted (raw weights) by tools/convert_checkpoint.py.
sparse_imagenet_checkpoint = 'checkpoints/resnet50_maxq-2of8_imagenet.pth'

model = dict(
    type='SparseDetector',
    detector='CascadeRCNN',
    sparsity=dict(method='maxq', n=2, m=8, layers=['backbone.*']),
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=sparse_imagenet_checkpoint)))
