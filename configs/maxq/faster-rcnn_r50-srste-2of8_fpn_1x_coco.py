_base_ = ['./faster-rcnn_r50-maxq-2of8_fpn_1x_coco.py']

# SR-STE (hard masks; the checkpoint is folded, W * L being a fixed point of the hard
# mask), from its own sparse ImageNet ResNet-50:
#   python tools/convert_checkpoint.py SRC \
#       checkpoints/resnet50_srste-2of8_imagenet.pth --n 2 --m 8 --method srste
sparse_imagenet_checkpoint = 'checkpoints/resnet50_srste-2of8_imagenet.pth'

model = dict(
    sparsity=dict(method='srste'),
    backbone=dict(init_cfg=dict(checkpoint=sparse_imagenet_checkpoint)))
