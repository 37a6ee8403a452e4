import pytest
import torch

from mmdet_maxq.sparsity import (HardSTE, SoftSTE, apply_mask, is_nm_sparse, layer_summary,
                                 maxq_mask, nm_compliance, srste_decay_, srste_decay_term)


def test_soft_ste_passes_gradient_unmasked():
    w = torch.randn(4, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    mask = maxq_mask(w.detach(), 2, 4)
    g = torch.randn_like(w)
    (SoftSTE.apply(w, mask) * g).sum().backward()
    assert torch.equal(w.grad, g)
    torch.testing.assert_close(SoftSTE.apply(w, mask), w * mask)


def test_hard_ste_multiplies_gradient_by_mask():
    w = torch.randn(4, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    mask = maxq_mask(w.detach(), 2, 4)
    # Hard STE is the true gradient of W * S with S constant: gradcheck proves it.
    assert torch.autograd.gradcheck(lambda x: HardSTE.apply(x, mask), (w, ))
    g = torch.randn_like(w)
    (apply_mask(w, mask, hard=True) * g).sum().backward()
    torch.testing.assert_close(w.grad, g * mask)


def test_srste_decay_term_and_in_place():
    w = torch.nn.Parameter(torch.randn(4, 8, 1, 1))
    mask = maxq_mask(w.detach(), 2, 8)
    term = srste_decay_term(w, mask, 0.1)
    torch.testing.assert_close(term, 0.1 * (1 - mask.clamp(0, 1)) * w.detach())
    assert (term[mask > 0] == 0).all() and (term[mask == 0] != 0).all()
    srste_decay_(w, mask, 0.1)  # no gradient yet: nothing to do
    assert w.grad is None
    w.grad = torch.ones_like(w)
    srste_decay_(w, mask, 0.1)
    torch.testing.assert_close(w.grad, 1 + term)


def test_compliance_and_summary():
    w = torch.randn(4, 16, 3, 3)
    assert not is_nm_sparse(w, 2, 8) and nm_compliance(w, 2, 8) == 0.0
    mask = maxq_mask(w, 2, 8, preserve=0.5)
    summary = layer_summary(w, 2, 8, mask=mask)
    assert summary['eligible'] and not summary['compliant']
    assert summary['nm_compliance'] == pytest.approx(0.5)
    assert summary['sparsity'] == pytest.approx(0.5 * 6 / 8)
    assert 1 <= summary['mean_multiplier'] <= 3
    full = layer_summary(w, 2, 8, mask=maxq_mask(w, 2, 8))
    assert full['compliant'] and full['sparsity'] == pytest.approx(0.75)
    stem = layer_summary(torch.randn(8, 3, 7, 7), 2, 8)
    assert stem['eligible'] is False and stem['compliant'] is None
    assert stem['mean_multiplier'] is None
