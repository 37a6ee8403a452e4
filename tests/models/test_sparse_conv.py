import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdet_maxq.models import SparseConv2d
from mmdet_maxq.sparsity import is_nm_sparse, maxq_mask, nm_mask


def _conv(cin=16, cout=8, k=3, groups=1, bias=True, dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=bias).to(dtype)


def test_convert_from_keeps_parameters_dtype_and_mode():
    conv = _conv(dtype=torch.float64).eval()
    sparse = SparseConv2d.convert_from(conv, 2, 8, method='maxq')
    assert sparse.weight is conv.weight and sparse.bias is conv.bias
    assert sparse.mask.dtype == torch.float64 and sparse.mask.shape == conv.weight.shape
    assert not sparse.training
    assert (sparse.stride, sparse.padding, sparse.groups) == (conv.stride, conv.padding,
                                                              conv.groups)


@pytest.mark.parametrize('method', ['maxq', 'srste'])
def test_forward_uses_masked_weight(method):
    conv = _conv(groups=2)
    sparse = SparseConv2d.convert_from(conv, 2, 4, method=method)
    sparse.update_mask(0.0)
    expected = maxq_mask(conv.weight.detach(), 2, 4) if method == 'maxq' else nm_mask(
        conv.weight.detach(), 2, 4)
    assert torch.equal(sparse.mask, expected)
    x = torch.randn(2, 16, 6, 6)
    want = F.conv2d(x, conv.weight * expected, conv.bias, padding=1, groups=2)
    torch.testing.assert_close(sparse(x), want)
    assert is_nm_sparse(sparse.effective_weight().detach(), 2, 4)


def test_soft_and_hard_ste_gradients():
    x = torch.randn(2, 16, 5, 5)
    grads = {}
    for ste in ('soft', 'hard'):
        conv = _conv()
        sparse = SparseConv2d.convert_from(conv, 2, 8, ste=ste)
        sparse.update_mask(0.0)
        sparse(x).square().sum().backward()
        grads[ste] = (conv.weight.grad.clone(), sparse.mask.clone())
    # The soft STE passes the gradient of W*S unmasked, the hard one multiplies it by S.
    soft_grad, mask = grads['soft']
    torch.testing.assert_close(grads['hard'][0], soft_grad * mask)
    assert (soft_grad[mask == 0] != 0).any()


def test_mask_follows_weights_in_every_training_forward():
    # No caching on the weight's version: fused optimizers and `.data` writes (EMA swaps,
    # mean-teacher updates) do not bump it, and the mask must still follow the weights.
    conv = _conv()
    sparse = SparseConv2d.convert_from(conv, 2, 8).train()
    sparse.set_preserve(0.5)
    x = torch.randn(1, 16, 5, 5)
    sparse(x)
    assert torch.equal(sparse.mask, maxq_mask(conv.weight.detach(), 2, 8, preserve=0.5))
    version = conv.weight._version
    conv.weight.data = torch.randn_like(conv.weight)  # what EMAHook's swap does
    assert conv.weight._version == version
    sparse(x)
    assert torch.equal(sparse.mask, maxq_mask(conv.weight.detach(), 2, 8, preserve=0.5))
    sparse.set_preserve(0.0)
    sparse(x)
    assert torch.equal(sparse.mask, maxq_mask(conv.weight.detach(), 2, 8, preserve=0.0))


def test_fused_optimizer_step_then_forward_uses_new_mask():
    conv = _conv()
    sparse = SparseConv2d.convert_from(conv, 2, 8).train()
    optimizer = torch.optim.SGD(sparse.parameters(), lr=1.0, fused=True)
    x = torch.randn(2, 16, 5, 5)
    sparse(x).square().sum().backward()
    version = conv.weight._version
    optimizer.step()
    assert conv.weight._version == version  # the fused step does not bump the counter
    sparse(x)
    assert torch.equal(sparse.mask, maxq_mask(conv.weight.detach(), 2, 8))


def test_frozen_weight_recomputed_only_when_rate_changes_or_stale():
    conv = _conv()
    conv.weight.requires_grad_(False)
    sparse = SparseConv2d.convert_from(conv, 2, 8).train()
    x = torch.randn(1, 16, 5, 5)
    sparse(x)
    first = sparse.mask.clone()
    with torch.no_grad():
        conv.weight.neg_().add_(torch.randn_like(conv.weight))
    sparse(x)
    assert torch.equal(sparse.mask, first)  # frozen: not recomputed every forward
    sparse.set_preserve(0.25)
    sparse(x)
    assert torch.equal(sparse.mask, maxq_mask(conv.weight, 2, 8, preserve=0.25))


def test_eval_switch_recomputes_once_from_swapped_weights():
    conv = _conv()
    sparse = SparseConv2d.convert_from(conv, 2, 8).train()
    x = torch.randn(1, 16, 5, 5)
    sparse(x)
    ema_weight = torch.randn_like(conv.weight)
    conv.weight.data.copy_(ema_weight)  # EMAHook.before_val_epoch, before model.eval()
    sparse.eval()
    with torch.no_grad():
        sparse(x)
    assert torch.equal(sparse.mask, maxq_mask(ema_weight, 2, 8))
    calls = []
    original = sparse.compute_mask
    sparse.compute_mask = lambda *a, **k: calls.append(1) or original(*a, **k)
    with torch.no_grad():
        sparse(x)
        sparse(x)
    assert calls == []  # later eval forwards reuse the mask


def test_to_dense_folds_the_rate_zero_mask():
    conv = _conv()
    sparse = SparseConv2d.convert_from(conv, 2, 8).eval()
    sparse.update_mask(0.5)  # mid-schedule: many blocks still dense
    assert not is_nm_sparse(sparse.effective_weight().detach(), 2, 8)
    dense = sparse.to_dense()
    assert type(dense) is nn.Conv2d
    assert is_nm_sparse(dense.weight.detach(), 2, 8)
    assert torch.equal(dense.weight, conv.weight.detach() * maxq_mask(conv.weight, 2, 8))
    assert sparse.preserve == 0.5  # the sparse conv itself is left as it was
    sparse.update_mask(0.0)
    x = torch.randn(1, 16, 7, 7)
    torch.testing.assert_close(dense(x), sparse(x))


def test_plain_state_dict_loads_and_mask_follows_weights():
    conv = _conv()
    other = _conv()
    with torch.no_grad():
        other.weight.copy_(torch.randn_like(other.weight))
    sparse = SparseConv2d.convert_from(conv, 2, 8)
    result = sparse.load_state_dict(other.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert sparse.mask_stale
    sparse.eval()
    sparse(torch.randn(1, 16, 4, 4))
    assert torch.equal(sparse.mask, maxq_mask(other.weight, 2, 8))


def test_loaded_masks_are_never_trusted():
    # Checkpoints of earlier versions hold masks (an EMA checkpoint averaged ones, another
    # N:M's checkpoint other ones): they load, and the mask follows from the loaded weights.
    source = SparseConv2d.convert_from(_conv(), 2, 8)
    saved = {k: v.clone() for k, v in source.state_dict().items()}
    assert 'mask' not in saved
    saved['mask'] = torch.full_like(saved['weight'], 0.37)
    fresh = SparseConv2d.convert_from(_conv(cout=8), 2, 8).eval()
    result = fresh.load_state_dict(saved, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert fresh.mask_stale
    with torch.no_grad():
        fresh(torch.randn(1, 16, 4, 4))
    assert torch.equal(fresh.mask, maxq_mask(saved['weight'], 2, 8))


def test_folded_weight_into_maxq_is_refused_with_the_layer_name():
    conv = _conv()
    folded = {'weight': conv.weight.detach() * maxq_mask(conv.weight, 2, 8),
              'bias': conv.bias.detach()}
    sparse = SparseConv2d.convert_from(_conv(), 2, 8, layer_name='backbone.layer1.0.conv2')
    with pytest.raises(ValueError, match=r'backbone\.layer1\.0\.conv2: the loaded weight is '
                       r'already exactly 2:8 sparse.*--method maxq'):
        sparse.load_state_dict(folded)
    # SR-STE fine-tunes folded weights: W * L is a fixed point of the hard mask.
    hard = SparseConv2d.convert_from(_conv(), 2, 8, method='srste')
    hard.load_state_dict(folded)


@pytest.mark.parametrize('method', ['maxq', 'srste'])
def test_forward_backward_on_meta_tensors_is_sync_free(method):
    # Any .item(), bool(tensor), nonzero() or value-dependent branch raises on meta tensors.
    for cin, cout, k in ((64, 64, 3), (256, 64, 1), (128, 512, 1)):
        conv = nn.Conv2d(cin, cout, k, padding=k // 2, device='meta')
        sparse = SparseConv2d.convert_from(conv, 2, 8, method=method).train()
        sparse.set_preserve(0.5)
        out = sparse(torch.randn(2, cin, 8, 8, device='meta'))
        out.sum().backward()
        assert out.shape == (2, cout, 8, 8) and conv.weight.grad.shape == conv.weight.shape
        assert sparse.mask.device.type == 'meta'


@pytest.mark.parametrize('kwargs, match', [
    (dict(n=3, m=2), 'n'),
    (dict(n=2, m=8, method='magnitude'), 'method'),
    (dict(n=2, m=8, ste='medium'), 'ste'),
    (dict(n=2, m=8, tau=0), 'tau'),
    (dict(n=2, m=32), 'M=32 must divide'),
])
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SparseConv2d.convert_from(_conv(), **kwargs)
