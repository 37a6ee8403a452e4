_base_ = [
    'mmpretrain::_base_/models/mobilenet_v2_1x.py',
    'mmpretrain::_base_/datasets/imagenet_bs32_pil_resize.py',
    '../_base_/imagenet_sparse_runtime.py',
]

# MaxQ (soft multi-axis masks + pruned-weight decay) 1:4 on every N:M-eligible backbone conv: the
# 1x1 pointwise convs are sparse; the 3-channel stem, the depthwise convs (one input channel per
# group) and the fc head stay dense (mmpretrain has no MobileNetV1, the paper's; MobileNetV2 is
# the closest). The paper's recipe replaces MobileNetV2's own schedule. Label smoothing 0.1.
model = dict(
    type='SparseClassifier',
    classifier='ImageClassifier',
    sparsity=dict(method='maxq', n=1, m=4, layers=['backbone.*']),
    head=dict(loss=dict(_delete_=True, type='LabelSmoothLoss', label_smooth_val=0.1,
                        loss_weight=1.0)))
