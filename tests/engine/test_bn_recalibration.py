"""BNRecalibrationHook (frozen BN re-estimated on the sparse forward) and DenseStartCheckHook
(a dense checkpoint into a fine-tune that is fully N:M from the first step)."""
import logging
import types

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS

import mmdet_maxq  # noqa: F401
from mmdet_maxq.engine.hooks import BNRecalibrationHook, DenseStartCheckHook, SparsityScheduleHook
from mmdet_maxq.engine.hooks.bn_recalibration_hook import (_tensor_forward, batch_norms,
                                                           recalibrate_batch_norms)
from mmdet_maxq.models import set_preserve_rate, sparse_layers
from mmdet_maxq.models.sparsify import sparsity_meta


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    """Build from mmpretrain's registries, leaving the default scope as it was afterwards."""
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield


def classifier(sparse=True, seed=0):
    torch.manual_seed(seed)
    cfg = dict(type='ImageClassifier',
               data_preprocessor=dict(type='ClsDataPreprocessor', mean=[128.0] * 3,
                                      std=[64.0] * 3),
               backbone=dict(type='ResNet', depth=18, base_channels=16, stem_channels=16,
                             norm_eval=True, frozen_stages=1, out_indices=(3, )),
               neck=dict(type='GlobalAveragePooling'),
               head=dict(type='LinearClsHead', num_classes=3, in_channels=128))
    if sparse:
        cfg = dict(cfg, type='SparseClassifier', classifier='ImageClassifier',
                   sparsity=dict(method='maxq', n=2, m=8))
    return MODELS.build(cfg)


def batches(num, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [dict(inputs=[torch.randint(0, 256, (3, 64, 64), generator=gen, dtype=torch.uint8)
                         for _ in range(8)]) for _ in range(num)]


class Logger:
    def __init__(self):
        self.lines = []

    def info(self, msg):
        self.lines.append((logging.INFO, msg))

    def warning(self, msg):
        self.lines.append((logging.WARNING, msg))


def runner(model, hooks, data=(), iteration=0, resume=False, model_cfg=None, load_from=None):
    return types.SimpleNamespace(model=model, hooks=list(hooks), iter=iteration, epoch=0,
                                 train_dataloader=list(data), train_loop=None, max_epochs=12,
                                 logger=Logger(), _resume=resume,
                                 cfg=Config(dict(model=model_cfg or {}, load_from=load_from)))


def bn_outputs(model, data):
    """Per BN layer: the channel means and variances of its output on ``data`` (eval mode)."""
    outs = {}
    handles = [bn.register_forward_hook(
        # clone: the output before the in-place ReLU that follows
        lambda mod, args, out, name=name: outs.setdefault(name, []).append(out.clone()))
        for name, bn in batch_norms(model)]
    model.eval()
    with torch.no_grad():
        for batch in data:
            model(**model.data_preprocessor(batch), mode='tensor')
    for handle in handles:
        handle.remove()
    return {name: (torch.cat(v).mean(dim=(0, 2, 3)), torch.cat(v).var(dim=(0, 2, 3)))
            for name, v in outs.items()}


def test_recalibrated_statistics_describe_the_sparse_forward(one_thread):
    dense = classifier(sparse=False)
    data = batches(1)
    # The dense "ImageNet" model: statistics of its own forward.
    recalibrate_batch_norms(dense, _tensor_forward(dense), data, 1)
    model = classifier()
    model.load_state_dict(dense.state_dict(), strict=False)  # no masks: a dense checkpoint
    schedule = SparsityScheduleHook(kind='cubic', start=0, end=8, by_epoch=True)
    set_preserve_rate(model, 1.0)
    before = bn_outputs(model, data)  # at the schedule's first rate, with the dense statistics
    set_preserve_rate(model, 0.0)
    hook = BNRecalibrationHook(num_batches=1)
    run = runner(model, [schedule, hook], data)
    hook.before_train(run)
    assert hook.used == 1
    assert all(conv.preserve == 1.0 for _, conv in sparse_layers(model))  # schedule's start
    assert 'over 1 training batches' in run.logger.lines[-1][1]
    after = bn_outputs(model, data)
    deep = 'backbone.layer4.1.bn2'
    # Frozen dense statistics do not describe the sparse forward; re-estimated ones do.
    assert float(before[deep][1].mean()) > 100
    # Eval normalises with the unbiased variance, the batch with the biased one: over the few
    # elements per channel of layer4 (2 x 2 x 8) the deepest layers drift by up to ~0.15.
    for name, (mean, var) in after.items():
        assert float(mean.abs().max()) < 0.2, name
        assert float((var - 1).abs().max()) < 0.2, name
    # Modes, momenta and the affine parameters are kept.
    assert all(bn.momentum == 0.1 for _, bn in batch_norms(model))
    assert all(not bn.training for _, bn in batch_norms(model))  # was eval, stays eval
    assert torch.equal(model.backbone.layer4[1].bn2.weight, dense.backbone.layer4[1].bn2.weight)


def test_recalibration_skipped_on_resume_and_past_iteration_zero():
    model = classifier()
    stats = model.backbone.layer2[0].bn1.running_var.clone()
    for kwargs in (dict(resume=True), dict(iteration=5)):
        hook = BNRecalibrationHook(num_batches=1)
        hook.before_train(runner(model, [hook], batches(1), **kwargs))
        assert hook.used is None
        assert torch.equal(model.backbone.layer2[0].bn1.running_var, stats)
    with pytest.raises(ValueError, match='num_batches must be an integer >= 0'):
        BNRecalibrationHook(num_batches=-1)


def _load_through(model, hook, state, schedule, model_cfg=None, load_from=None):
    run = runner(model, [schedule, hook], model_cfg=model_cfg, load_from=load_from)
    hook.before_run(run)
    model.load_state_dict(state, strict=False)
    hook.before_train(run)
    return run


def test_dense_checkpoint_into_a_full_nm_start_warns_naming_a_layer():
    model = classifier()
    dense_state = classifier(sparse=False).state_dict()
    full = SparsityScheduleHook(kind='linear', start=0, end=0)
    run = _load_through(model, DenseStartCheckHook(), dense_state, full)
    (level, message), = run.logger.lines
    assert level == logging.WARNING
    assert "19 sparse layers (e.g. 'backbone.layer1.0.conv1') were loaded from a checkpoint " \
        "that is not sparse (no meta['sparsity'], no N:M masks" in message
    assert 'configs/imagenet/' in message and '*-incremental config' in message
    with pytest.raises(ValueError, match=r"\(e\.g\. 'backbone\.layer1\.0\.conv1'\) were "
                       'loaded from a checkpoint that is not sparse'):
        _load_through(classifier(), DenseStartCheckHook(refuse=True), dense_state, full)


def test_sparse_checkpoint_or_incremental_start_passes(tmp_path):
    sparse = classifier()
    path = str(tmp_path / 'sparse.pth')  # as a sparse training run saves it
    torch.save(dict(state_dict=sparse.state_dict(), meta=dict(sparsity=sparsity_meta(sparse))),
               path)
    full = SparsityScheduleHook(kind='linear', start=0, end=0)
    run = _load_through(classifier(), DenseStartCheckHook(refuse=True), sparse.state_dict(),
                        full, load_from=path)
    assert not run.logger.lines
    # A state dict of an earlier version carries the masks, which say it is sparse.
    legacy = dict(sparse.state_dict(), **{f'{name}.mask': torch.ones_like(layer.weight)
                                          for name, layer in sparse_layers(sparse)})
    run = _load_through(classifier(), DenseStartCheckHook(refuse=True), legacy, full)
    assert not run.logger.lines
    # The same weights without that meta are not known to be sparse.
    with pytest.raises(ValueError, match='loaded from a checkpoint that is not sparse'):
        _load_through(classifier(), DenseStartCheckHook(refuse=True), sparse.state_dict(), full)
    dense_state = classifier(sparse=False).state_dict()
    incremental = SparsityScheduleHook(kind='cubic', start=0, end=8, by_epoch=True)
    run = _load_through(classifier(), DenseStartCheckHook(refuse=True), dense_state,
                        incremental)
    assert not run.logger.lines


def test_converted_sparse_checkpoint_passes_and_converted_dense_one_warns(tmp_path):
    """tools/convert_checkpoint.py writes raw weights without masks; its meta tells whether the
    source was sparse, so a Pretrained init from a sparse conversion is not called dense."""
    backbone = {k[len('backbone.'):]: v for k, v in classifier(sparse=False).state_dict().items()
                if k.startswith('backbone.')}
    full = SparsityScheduleHook(kind='linear', start=0, end=0)
    for masked_layers, warned in ((19, False), (0, True)):
        path = tmp_path / f'converted_{masked_layers}.pth'
        torch.save({'state_dict': backbone,
                    'meta': dict(converter='mmdet_maxq.checkpoint.convert', n=2, m=8,
                                 masked_layers=masked_layers, nm_sparse=False)}, path)
        model_cfg = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=str(path))))
        model = classifier()
        run = runner(model, [full, DenseStartCheckHook()], model_cfg=model_cfg)
        run.hooks[1].before_run(run)
        model.backbone.load_state_dict(backbone, strict=False)  # as the Pretrained init does
        run.hooks[1].before_train(run)
        assert bool(run.logger.lines) == warned, run.logger.lines


def test_plain_classifier_gets_the_sparse_classifier_fix():
    hook = BNRecalibrationHook(num_batches=1)
    with pytest.raises(TypeError, match=r"BNRecalibrationHook needs a sparse model \(got a plain "
                       r"ImageClassifier\); make the classifier sparse with "
                       r"model=dict\(type='SparseClassifier', classifier='ImageClassifier'"):
        hook.before_train(runner(classifier(sparse=False), [hook], batches(1)))
