_base_ = ['./faster-rcnn_r50-srste-2of8_fpn_1x_coco.py']

# 2:4 instead of 2:8, from its own sparse ImageNet ResNet-50:
#   python tools/convert_checkpoint.py SRC \
#       checkpoints/resnet50_srste-2of4_imagenet.pth --n 2 --m 4 --method srste
sparse_imagenet_checkpoint = 'checkpoints/resnet50_srste-2of4_imagenet.pth'

model = dict(
    sparsity=dict(n=2, m=4),
    backbone=dict(init_cfg=dict(checkpoint=sparse_imagenet_checkpoint)))
