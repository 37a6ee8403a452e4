# SR-STE 2:4 (hard masks + pruned-weight decay), the baseline: the ResNet-50 MaxQ 2:4 recipe
# with the other method.
_base_ = ['./resnet50-maxq-2of4_8xb32_in1k.py']

model = dict(sparsity=dict(method='srste'))
