_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', '../_base_/sparsity_runtime.py']

# A 2:4 sparse ImageNet ResNet-50, converted by tools/convert_checkpoint.py.
sparse_imagenet_checkpoint = 'checkpoints/resnet50_srste-2of4_imagenet.pth'

model = dict(_delete_=True, type='SparseDetector', architecture=_base_.model,
             sparsity=dict(method='srste', n=2, m=4, layers=['backbone.*']))
model['architecture']['backbone']['init_cfg'] = dict(
    type='Pretrained', checkpoint=sparse_imagenet_checkpoint)
custom_hooks = [*_base_.custom_hooks, dict(type='SRSTEDecayHook', decay=2e-4)]
