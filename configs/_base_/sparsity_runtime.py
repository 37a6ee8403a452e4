# Shared by every sparse config: registrations, the incremental N:M schedule and the logging.
# `custom_imports` makes a config self-contained: MMDetection's own tools/train.py and
# `mim train mmdet` import mmdet_maxq (wrapper, hooks, checkpoint-loading fix) from it.
custom_imports = dict(imports=['mmdet_maxq'], allow_failed_imports=False)

custom_hooks = [
    # Share of blocks exempt from N:M goes 1 -> 0 over epochs [start, end); masks are
    # recomputed from the weights before every iteration.
    dict(type='SparsityScheduleHook', kind='cubic', start=0, end=8, by_epoch=True),
    dict(type='SparsityLoggerHook', interval=50),
    dict(type='RandomStateHook'),
]
