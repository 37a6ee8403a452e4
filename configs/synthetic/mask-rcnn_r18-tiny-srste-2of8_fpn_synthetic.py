# SR-STE 2:8 (hard masks + decay of the pruned weights) on the synthetic set, same schedule
# and decay as the MaxQ config.
_base_ = ['./mask-rcnn_r18-tiny-maxq-2of8_fpn_synthetic.py']

model = dict(sparsity=dict(method='srste'))
