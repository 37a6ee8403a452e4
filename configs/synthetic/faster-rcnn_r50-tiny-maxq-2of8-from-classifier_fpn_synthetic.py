# The hand-over, shrunk: faster-rcnn_r50-tiny-maxq-2of8_fpn_synthetic.py initialised directly
# from the checkpoint that resnet50-tiny-maxq-2of8_synthetic-imagenet.py (a SparseClassifier)
# writes: its backbone.* keys (raw weights and masks) load strictly into the detector's ResNet,
# no converter step. Full N:M from the first iteration, as the classifier ended.
_base_ = ['./faster-rcnn_r50-tiny-maxq-2of8_fpn_synthetic.py']

sparse_imagenet_checkpoint = 'work_dirs/resnet50-tiny-maxq-2of8_synthetic-imagenet/epoch_2.pth'

model = dict(backbone=dict(init_cfg=dict(type='Pretrained', prefix='backbone.',
                                         checkpoint=sparse_imagenet_checkpoint)))
custom_hooks = [  # as in the base, plus the check that the backbone was loaded sparse
    dict(type='SparsityScheduleHook', kind='linear', start=0, end=0),
    dict(type='SRSTEDecayHook', decay=2e-4),
    dict(type='SparsityLoggerHook', interval=10),
    dict(type='RandomStateHook'),
    dict(type='DenseStartCheckHook'),
]
