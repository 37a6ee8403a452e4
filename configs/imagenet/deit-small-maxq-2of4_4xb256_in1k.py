_base_ = [
    'mmpretrain::deit/deit-small_4xb256_in1k.py',
    '../_base_/imagenet_sparse_adamw_hooks.py',
]

# MaxQ 2:4 on every N:M-eligible backbone layer of mmpretrain's DeiT-S recipe: the attention
# qkv / proj and both FFN layers of the 12 blocks (nn.Linear); the 3-channel 16x16 patch
# embedding stays dense, as do the cls token, position embedding and the head.
model = dict(
    type='SparseClassifier',
    classifier='ImageClassifier',
    sparsity=dict(method='maxq', n=2, m=4, layers=['backbone.*']))
custom_hooks = _base_.maxq_adamw_hooks
