_base_ = [
    'mmpretrain::_base_/models/resnet50.py',
    'mmpretrain::_base_/datasets/imagenet_bs32.py',
    '../_base_/imagenet_sparse_runtime.py',
]

# MaxQ (soft multi-axis masks + pruned-weight decay) 2:4 on every N:M-eligible backbone conv
# (downsample convs included); the 3-channel stem and the fc head stay dense. Label smoothing 0.1.
model = dict(
    type='SparseClassifier',
    classifier='ImageClassifier',
    sparsity=dict(method='maxq', n=2, m=4, layers=['backbone.*']),
    head=dict(loss=dict(_delete_=True, type='LabelSmoothLoss', label_smooth_val=0.1,
                        loss_weight=1.0)))
