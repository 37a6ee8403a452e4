_base_ = [
    'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py',
    '../_base_/sparsity_runtime.py',
]

# MMDetection's DINO 4-scale R-50 (12 epochs) with MaxQ 2:4 on the backbone and on the
# transformer's linear layers: in the encoder and decoder every deformable attention's
# value_proj / sampling_offsets / attention_weights / output_proj, every FFN layer and the
# decoder's ref_point_head. The decoder self-attention (nn.MultiheadAttention: in_proj_weight
# and out_proj.weight are read by F.multi_head_attention_forward without calling a module)
# stays dense, as do the detection heads, the query embeddings and the two-stage memory_trans_fc
# (outside encoder.* / decoder.*). The backbone starts from a 2:4 sparse ImageNet R-50 as in
# mask-rcnn_r50-maxq-2of4_fpn_1x_coco.py; the transformer trains from scratch, as DINO's does.
sparse_imagenet_checkpoint = 'checkpoints/resnet50_maxq-2of4_imagenet.pth'

model = dict(
    type='SparseDetector',
    detector='DINO',
    sparsity=dict(method='maxq', n=2, m=4, layers=['backbone.*', 'encoder.*', 'decoder.*']),
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=sparse_imagenet_checkpoint)))
custom_hooks = [
    dict(type='SparsityScheduleHook', kind='linear', start=0, end=0),
    # AdamW (weight decay 1e-4): decoupled, twice the recipe's weight decay (see
    # ../_base_/sparsity_adamw_runtime.py); the backbone's lr_mult 0.1 applies to it too.
    dict(type='SRSTEDecayHook', decay=2e-4, mode='decoupled'),
    dict(type='SparsityLoggerHook', interval=50),
    dict(type='RandomStateHook'),
    dict(type='DenseStartCheckHook'),
]
