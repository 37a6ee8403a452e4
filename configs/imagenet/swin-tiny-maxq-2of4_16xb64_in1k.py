_base_ = [
    'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py',
    '../_base_/imagenet_sparse_adamw_hooks.py',
]

# MaxQ 2:4 on every N:M-eligible backbone layer of mmpretrain's Swin-T recipe: the attention
# qkv / proj, both FFN layers and the PatchMerging reductions (all nn.Linear); the 3-channel
# patch-embedding conv stays dense, as does the head's fc (outside the backbone).
model = dict(
    type='SparseClassifier',
    classifier='ImageClassifier',
    sparsity=dict(method='maxq', n=2, m=4, layers=['backbone.*']))
custom_hooks = _base_.maxq_adamw_hooks
