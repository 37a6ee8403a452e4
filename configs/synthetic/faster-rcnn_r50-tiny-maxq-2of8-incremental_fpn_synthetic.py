# The *-incremental COCO configs, shrunk: MaxQ 2:8 from a dense backbone under MMDetection's
# frozen BN (frozen_stages=1, norm_eval=True), the preserve rate falling from 1 (epoch 0) to 0
# over 2 epochs, and the BN statistics re-estimated on the sparse forward before the first
# iteration (as ../_base_/sparsity_incremental_runtime.py does, here over 2 batches). The dense
# checkpoint (an mmpretrain classifier's: backbone.* keys) is given on the command line.
_base_ = ['./faster-rcnn_r50-tiny-maxq-2of8_fpn_synthetic.py']

dense_imagenet_checkpoint = 'checkpoints/resnet50-tiny_dense_imagenet.pth'

model = dict(backbone=dict(init_cfg=dict(type='Pretrained', prefix='backbone.',
                                         checkpoint=dense_imagenet_checkpoint)))
custom_hooks = [
    dict(type='SparsityScheduleHook', kind='cubic', start=0, end=2, by_epoch=True),
    dict(type='BNRecalibrationHook', num_batches=2),
    dict(type='SRSTEDecayHook', decay=2e-4),
    dict(type='SparsityLoggerHook', interval=10),
    dict(type='RandomStateHook'),
]
