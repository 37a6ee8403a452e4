# MaxQ 1:4: the ResNet-50 MaxQ 2:4 recipe with another N:M.
_base_ = ['./resnet50-maxq-2of4_8xb32_in1k.py']

model = dict(sparsity=dict(n=1, m=4))
