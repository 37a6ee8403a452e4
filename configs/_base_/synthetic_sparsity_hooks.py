# The sparsity hooks of the synthetic-set detectors trained from scratch (a dense start), so
# sparsity comes incrementally: the preserve rate falls from 1 to 0 over epochs 0-4 of 6
# (cubic), then the last two epochs train the full N:M model. The pruned-weight decay (2e-4)
# is the paper's, on every sparse layer (MaxQ too).
custom_hooks = [
    dict(type='SparsityScheduleHook', kind='cubic', start=0, end=4, by_epoch=True),
    dict(type='SRSTEDecayHook', decay=2e-4),
    dict(type='SparsityLoggerHook', interval=10),
    dict(type='RandomStateHook'),
]
