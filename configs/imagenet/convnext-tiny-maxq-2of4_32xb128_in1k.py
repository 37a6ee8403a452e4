_base_ = [
    'mmpretrain::convnext/convnext-tiny_32xb128_in1k.py',
    '../_base_/imagenet_sparse_adamw_hooks.py',
]

# MaxQ 2:4 on every N:M-eligible backbone layer of mmpretrain's ConvNeXt-T recipe: the
# pointwise layers (nn.Linear, linear_pw_conv=True) and the three 2x2 downsample convs; the
# 4x4 stem conv (3 input channels) and the 7x7 depthwise convs (one input channel per group)
# stay dense, as does the head's fc.
model = dict(
    type='SparseClassifier',
    classifier='ImageClassifier',
    sparsity=dict(method='maxq', n=2, m=4, layers=['backbone.*']))
custom_hooks = _base_.custom_hooks + _base_.maxq_adamw_hooks  # the recipe's EMAHook kept
