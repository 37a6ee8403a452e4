_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', '../_base_/sparsity_runtime.py']

# A 2:8 sparse ImageNet ResNet-50
# converted by tools/convert_checkpoint.py folded (W * L, a fixed point of the hard mask):
#   python tools/convert_checkpoint.py SRC \
#       checkpoints/resnet50_srste-2of8_imagenet.pth --n 2 --m 8 --method srste
sparse_imagenet_checkpoint = 'checkpoints/resnet50_srste-2of8_imagenet.pth'

model = dict(
    type='SparseDetector',
    detector='MaskRCNN',
    sparsity=dict(method='srste', n=2, m=8, layers=['backbone.*']),
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=sparse_imagenet_checkpoint)))
