_base_ = ['mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py', '../_base_/sparsity_runtime.py']

# A 2:8 sparse ImageNet ResNet-50 converted (raw weights) by tools/convert_checkpoint.py.
sparse_imagenet_checkpoint = 'checkpoints/resnet50_maxq-2of8_imagenet.pth'

# MMDetection's FCOS R-50 starts from the Detectron caffe ResNet-50 (stride in the 1x1 conv,
# BGR input, mean subtraction only). The sparse ImageNet checkpoints that
# tools/convert_checkpoint.py makes (the paper's, torchvision, mmpretrain) are pytorch-style
# ResNets trained on normalised RGB, so the backbone and the input normalisation follow them;
# the rest (GN head, FPN, 1x schedule, frozen BN) is MMDetection's r50-caffe FCOS.
model = dict(
    type='SparseDetector',
    detector='FCOS',
    sparsity=dict(method='maxq', n=2, m=8, layers=['backbone.*']),
    data_preprocessor=dict(
        mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint=sparse_imagenet_checkpoint)))
