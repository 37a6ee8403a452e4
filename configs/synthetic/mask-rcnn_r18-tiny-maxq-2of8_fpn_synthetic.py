# The README's main job: MaxQ 2:8 on the narrow ResNet-18 Mask R-CNN of the synthetic set,
# trained from scratch with incremental sparsity (../_base_/synthetic_sparsity_hooks.py).
_base_ = [
    './mask-rcnn_r18-tiny_fpn_synthetic.py',  # carries custom_imports
    '../_base_/synthetic_sparsity_hooks.py',
]

model = dict(
    type='SparseDetector',
    detector='MaskRCNN',
    sparsity=dict(method='maxq', n=2, m=8, layers=['backbone.*']))
