_base_ = ['./faster-rcnn_r50-maxq-2of8_fpn_1x_coco.py']

# 4:8 instead of 2:8, from its own sparse ImageNet ResNet-50:
#   python tools/convert_checkpoint.py SRC \
#       checkpoints/resnet50_maxq-4of8_imagenet.pth --n 4 --m 8
sparse_imagenet_checkpoint = 'checkpoints/resnet50_maxq-4of8_imagenet.pth'

model = dict(
    sparsity=dict(n=4, m=8),
    backbone=dict(init_cfg=dict(checkpoint=sparse_imagenet_checkpoint)))
