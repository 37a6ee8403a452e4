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


def test_mask_recomputed_only_when_weights_or_rate_change():
    conv = _conv()
    sparse = SparseConv2d.convert_from(conv, 2, 8)
    first = sparse.update_mask(0.5).clone()
    assert sparse.mask_stale is False
    with torch.no_grad():
        conv.weight.mul_(-1).add_(torch.randn_like(conv.weight))
    second = sparse.update_mask().clone()
    assert not torch.equal(first, second)
    assert torch.equal(second, maxq_mask(conv.weight.detach(), 2, 8, preserve=0.5))
    third = sparse.update_mask(0.0)
    assert torch.equal(third, maxq_mask(conv.weight.detach(), 2, 8, preserve=0.0))


def test_to_dense_folds_mask():
    conv = _conv()
    sparse = SparseConv2d.convert_from(conv, 2, 8).eval()
    sparse.update_mask(0.0)
    dense = sparse.to_dense()
    assert type(dense) is nn.Conv2d
    assert is_nm_sparse(dense.weight.detach(), 2, 8)
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
    # A checkpoint with a mask restores it as saved.
    saved = {k: v.clone() for k, v in sparse.state_dict().items()}
    fresh = SparseConv2d.convert_from(_conv(), 2, 8)
    fresh.load_state_dict(saved)
    assert not fresh.mask_stale and torch.equal(fresh.mask, saved['mask'])


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
