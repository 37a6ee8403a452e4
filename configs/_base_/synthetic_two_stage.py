# Proposal, sample and detection counts of the synthetic-set two-stage detectors (Faster and
# Mask R-CNN), sized for 128 px images with at most 3 objects; used as
# `model = dict(train_cfg=_base_.two_stage_train_cfg, test_cfg=_base_.two_stage_test_cfg)`.
two_stage_train_cfg = dict(
    rpn_proposal=dict(nms_pre=500, max_per_img=300), rcnn=dict(sampler=dict(num=128)))
two_stage_test_cfg = dict(rpn=dict(nms_pre=300, max_per_img=100), rcnn=dict(max_per_img=20))
