"""Straight-through maskers and the SR-STE decay."""
import torch

from mmdet_maxq.sparsity import (HardSTE, SoftSTE, apply_mask, maxq_mask, srste_decay_,
                                 srste_decay_term)


def weight_and_mask(dtype=torch.float64):
    w = torch.randn(4, 8, 3, 3, dtype=dtype, generator=torch.Generator().manual_seed(0))
    w.requires_grad_(True)
    return w, maxq_mask(w, 2, 4)


def test_forward_is_weight_times_mask():
    w, mask = weight_and_mask()
    for out in (SoftSTE.apply(w, mask), HardSTE.apply(w, mask), apply_mask(w, mask)):
        assert torch.equal(out, w * mask)


def test_soft_ste_passes_the_gradient_unmasked():
    w, mask = weight_and_mask()
    g = torch.randn_like(w)
    (apply_mask(w, mask) * g).sum().backward()
    assert torch.equal(w.grad, g)
    assert (mask == 0).any()  # so an unmasked gradient differs from a masked one
    # With a mask of ones the soft STE is the exact gradient: gradcheck agrees.
    ones = torch.ones_like(mask)
    x = w.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: SoftSTE.apply(x, ones), (x, ))


def test_hard_ste_multiplies_the_gradient_by_the_mask():
    w, mask = weight_and_mask()
    g = torch.randn_like(w)
    (apply_mask(w, mask, hard=True) * g).sum().backward()
    assert torch.equal(w.grad, g * mask)
    assert not torch.equal(w.grad, g)
    # The hard STE is the true gradient of W * S with S constant.
    x = w.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: HardSTE.apply(x, mask), (x, ))


def test_mask_gets_no_gradient_and_half_weights_keep_their_dtype():
    w, mask = weight_and_mask(torch.float16)
    mask = mask.float().requires_grad_(True)
    out = apply_mask(w, mask)
    assert out.dtype == torch.float16
    out.sum().backward()
    assert mask.grad is None and w.grad.dtype == torch.float16


def test_srste_decay_term_matches_the_formula():
    w = torch.randn(4, 8, 3, 3)
    mask = maxq_mask(w, 2, 8)
    lam = 0.1
    term = srste_decay_term(w, mask, lam)
    expected = lam * (1 - torch.clamp(mask, 0, 1)) * w
    torch.testing.assert_close(term, expected, rtol=0, atol=0)
    assert torch.equal(term[mask >= 1], torch.zeros(int((mask >= 1).sum())))
    assert torch.equal(term[mask == 0], lam * w[mask == 0])
    half = torch.full_like(w, 0.5)  # a multiplier inside (0, 1) decays by half
    torch.testing.assert_close(srste_decay_term(w, half, lam), lam * 0.5 * w)


def test_srste_decay_in_place_on_the_gradient():
    w = torch.nn.Parameter(torch.randn(4, 8, 1, 1))
    mask = maxq_mask(w, 2, 8)
    assert srste_decay_(w, mask, 0.1) is None and w.grad is None  # no gradient: no-op
    w.grad = torch.ones_like(w)
    srste_decay_(w, mask, 0.1)
    torch.testing.assert_close(w.grad, 1 + 0.1 * (1 - mask.clamp(0, 1)) * w.detach())
    assert not w.grad.requires_grad
