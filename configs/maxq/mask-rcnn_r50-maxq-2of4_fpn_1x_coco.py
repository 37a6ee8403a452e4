_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', '../_base_/sparsity_runtime.py']

# A 2:4 sparse ImageNet ResNet-50
# converted by tools/convert_checkpoint.py with raw weights (MaxQ recomputes S(W), as the
# ImageNet model did):
#   python tools/convert_checkpoint.py SRC \
#       checkpoints/resnet50_maxq-2of4_imagenet.pth --n 2 --m 4
sparse_imagenet_checkpoint = 'checkpoints/resnet50_maxq-2of4_imagenet.pth'

model = dict(
    type='SparseDetector',
    detector='MaskRCNN',
    sparsity=dict(method='maxq', n=2, m=4, layers=['backbone.*']),
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=sparse_imagenet_checkpoint)))
