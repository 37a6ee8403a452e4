"""The GPU path users train on: --amp, --resume, fused optimizers, sync-free sparse convs.

Every test here is marked ``cuda`` and skipped (visibly, with the reason) without a GPU; CI
has none. Run them on a GPU machine with ``python -m pytest -m cuda tests/cuda``.
"""
import os.path as osp

import pytest
import torch
import torch.nn as nn

from mmdet_maxq.checkpoint import checkpoint_masks
from mmdet_maxq.sparsity import is_nm_sparse, maxq_mask
from ..conftest import data_options, run_tool

pytestmark = pytest.mark.cuda

TINY_R50 = 'configs/synthetic/faster-rcnn_r50-tiny-maxq-2of8_fpn_synthetic.py'
SHORT = ['model.backbone.init_cfg=None', 'train_dataloader.dataset.indices=8',
         'train_cfg.val_interval=9', 'default_hooks.logger.interval=1']


def test_sparse_conv_forward_backward_is_sync_free_on_cuda():
    from mmdet_maxq.models import SparseConv2d

    torch.manual_seed(0)
    layers = [SparseConv2d.convert_from(nn.Conv2d(c, o, k, padding=k // 2).cuda(), 2, 8,
                                        method=method, layer_name=f'l{i}')
              for i, (c, o, k, method) in enumerate([(64, 64, 3, 'maxq'), (256, 64, 1, 'maxq'),
                                                     (128, 512, 1, 'srste')])]
    x = {c: torch.randn(2, c, 16, 16, device='cuda') for c in (64, 256, 128)}
    for conv in layers:  # warm-up: allocations and kernel selection may sync once
        conv.set_preserve(0.5)
        conv(x[conv.in_channels]).sum().backward()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        for conv in layers:
            with torch.autocast('cuda', dtype=torch.float16):
                out = conv(x[conv.in_channels])
            out.float().sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    for conv in layers:
        expected = maxq_mask(conv.weight.detach().cpu(), 2, 8, preserve=0.5) \
            if conv.method == 'maxq' else None
        if expected is not None:
            assert torch.equal(conv.mask.cpu(), expected)


@pytest.mark.parametrize('fused', [False, True])
def test_decay_is_lambda_w_on_pruned_weights_after_unscaling_on_cuda(fused):
    import types

    from mmengine.optim import OptimWrapper

    from mmdet_maxq.engine.hooks import SRSTEDecayHook
    from mmdet_maxq.models import SparseConv2d, SparsitySettings
    from mmdet_maxq.models.sparsify import SETTINGS_ATTR

    torch.manual_seed(0)
    model = nn.Module()
    model.conv = SparseConv2d.convert_from(nn.Conv2d(16, 8, 3, padding=1).cuda(), 2, 8)
    setattr(model, SETTINGS_ATTR, SparsitySettings(n=2, m=8))
    conv = model.conv
    optimizer = torch.optim.SGD([conv.weight], lr=0.0, fused=fused)
    SRSTEDecayHook(decay=2e-4).before_train(
        types.SimpleNamespace(model=model, optim_wrapper=OptimWrapper(optimizer)))
    seen = {}
    optimizer.register_step_pre_hook(lambda opt, a, k: seen.update(
        grad=conv.weight.grad.clone(), scale=getattr(opt, 'grad_scale', None)))
    scaler = torch.amp.GradScaler('cuda', init_scale=2.0 ** 20)
    with torch.autocast('cuda', dtype=torch.float16):
        loss = conv(torch.randn(2, 16, 8, 8, device='cuda')).float().sum()
    scaler.scale(loss).backward()
    scaled = conv.weight.grad.clone()
    scaler.step(optimizer)
    final = seen['grad'] / seen['scale'] if fused else seen['grad']
    pruned = conv.mask == 0
    torch.testing.assert_close((final - scaled / 2.0 ** 20)[pruned],
                               2e-4 * conv.weight.detach()[pruned], rtol=1e-3, atol=1e-9)


def test_amp_training_then_resume_on_cuda(synthetic_coco, tmp_path):
    """Faster R-CNN R50-FPN (narrow, MMDetection's R50 settings) with --amp for one epoch, then
    --resume for a second: Runner.resume maps the checkpoint to CUDA (RNG states included)."""
    work = str(tmp_path / 'amp')
    run_tool(['tools/train.py', TINY_R50, '--amp', '--work-dir', work, '--cfg-options',
              'train_cfg.max_epochs=1', *SHORT, *data_options(synthetic_coco)])
    proc = run_tool(['tools/train.py', TINY_R50, '--amp', '--resume', '--work-dir', work,
                     '--cfg-options', 'train_cfg.max_epochs=2', *SHORT,
                     *data_options(synthetic_coco)])
    log = proc.stdout + proc.stderr
    assert 'resumed epoch: 1' in log.lower() or 'Epoch(train) [2]' in log
    state = torch.load(osp.join(work, 'epoch_2.pth'), map_location='cpu', weights_only=True)
    assert state['meta']['random_state'][0]['torch'].dtype == torch.uint8
    masks = checkpoint_masks(state)
    assert len(masks) == 52
    for key, mask in masks.items():
        assert is_nm_sparse(state['state_dict'][key + '.weight'] * mask, 2, 8), key
