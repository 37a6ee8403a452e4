_base_ = [
    'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    '../_base_/sparsity_incremental_runtime.py',
]

# MaxQ 2:8 from MMDetection's dense ImageNet ResNet-50 (the base config's torchvision://resnet50
# init), with incremental sparsity (see ../_base_/sparsity_incremental_runtime.py).
model = dict(
    type='SparseDetector',
    detector='FasterRCNN',
    sparsity=dict(method='maxq', n=2, m=8, layers=['backbone.*']))
