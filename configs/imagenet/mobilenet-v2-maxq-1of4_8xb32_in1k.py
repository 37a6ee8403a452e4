# MaxQ 1:4 on MobileNetV2: the MobileNetV2 MaxQ 2:4 recipe with another N:M.
_base_ = ['./mobilenet-v2-maxq-2of4_8xb32_in1k.py']

model = dict(sparsity=dict(n=1, m=4))
