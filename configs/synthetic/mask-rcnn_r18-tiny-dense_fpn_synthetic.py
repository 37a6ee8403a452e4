# The dense baseline through the same config, tools and reports (no masks): the reference row
# of the AP table.
_base_ = ['./mask-rcnn_r18-tiny-maxq-2of8_fpn_synthetic.py']

model = dict(sparsity=dict(method='dense'))
custom_hooks = [dict(type='RandomStateHook')]
