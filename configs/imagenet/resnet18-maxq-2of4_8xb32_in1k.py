# MaxQ 2:4 on ResNet-18: the ResNet-50 MaxQ 2:4 recipe on mmpretrain's ResNet-18 (depth 18, a
# 512-channel head, as mmpretrain's _base_/models/resnet18.py).
_base_ = ['./resnet50-maxq-2of4_8xb32_in1k.py']

model = dict(backbone=dict(depth=18), head=dict(in_channels=512))
