"""Every bad argument gets one ValueError that names it (and never a silent wrong mask)."""
import pytest
import torch

from mmdet_maxq.sparsity import (apply_mask, check_nm, is_nm_eligible, is_nm_sparse, maxq_mask,
                                 nm_compliance, nm_figures, nm_mask, preserve_rate, srste_decay_,
                                 srste_decay_term)

W = torch.randn(4, 8, 3, 3)
NAN = float('nan')
INF = float('inf')


def with_value(value, dtype=torch.float32):
    w = torch.randn(4, 8, 1, 1).to(dtype)
    w[2, 5] = value
    return w


@pytest.mark.parametrize('fn', [nm_mask, maxq_mask])
@pytest.mark.parametrize('weight, n, m, kwargs, match', [
    (W, 0, 4, {}, r'n must be >= 1'),
    (W, -1, 4, {}, r'n must be >= 1'),
    (W, 5, 4, {}, r'n must be <= m'),
    (W, 2, 0, {}, r'm must be >= 1'),
    (W, 2.0, 4, {}, r'n must be an integer'),
    (W, 2, '4', {}, r'm must be an integer'),
    (W, True, 4, {}, r'n must be an integer'),
    (torch.randn(4, 6, 3, 3), 2, 4, {}, r'm=4 must divide the 6 input channels'),
    (torch.randn(4, 12), 2, 8, {}, r'm=8 must divide the 12 input channels'),
    (torch.randn(4, 8, 3), 2, 4, {}, r'weight must be a 4-D conv weight'),
    (torch.randn(8), 2, 4, {}, r'weight must be a 4-D conv weight'),
    (torch.randn(2, 4, 8, 3, 3), 2, 4, {}, r'weight must be a 4-D conv weight'),
    (torch.zeros(0, 8), 2, 4, {}, r'weight of shape \(0, 8\) has no elements'),
    (torch.arange(32).reshape(4, 8), 2, 4, {}, r'weight must be a floating-point tensor'),
    ([[1.0] * 8], 2, 4, {}, r'weight must be a torch.Tensor'),
    (with_value(NAN), 2, 4, {}, r'weight of shape .* has non-finite values'),
    (with_value(INF), 2, 4, {}, r'weight of shape .* has non-finite values'),
    (with_value(-INF), 2, 4, {}, r'weight of shape .* has non-finite values'),
    (with_value(NAN, torch.float16), 2, 4, {}, r'non-finite values'),
    (with_value(INF, torch.bfloat16), 2, 4, {}, r'non-finite values'),
    (W, 2, 4, dict(preserve=1.5), r'preserve must be a number in \[0, 1\]'),
    (W, 2, 4, dict(preserve=-0.1), r'preserve must be a number in \[0, 1\]'),
    (W, 2, 4, dict(preserve=NAN), r'preserve must be a number in \[0, 1\]'),
    (W, 2, 4, dict(preserve='half'), r'preserve must be a number in \[0, 1\]'),
])
def test_mask_functions_name_the_bad_argument(fn, weight, n, m, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(weight, n, m, **kwargs)


@pytest.mark.parametrize('fn', [nm_mask, maxq_mask])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float64])
def test_non_finite_error_names_the_layer(fn, dtype):
    with pytest.raises(ValueError, match=r'^backbone\.layer3\.1\.conv2 of shape \(4, 8, 1, 1\) '
                       r'has non-finite values \(NaN or Inf\); fix the training divergence '
                       r'or the checkpoint first$'):
        fn(with_value(NAN, dtype), 2, 4, name='backbone.layer3.1.conv2')


@pytest.mark.parametrize('tau', [0.0, -1e-2, NAN, INF, '0.01', None])
def test_bad_tau(tau):
    with pytest.raises(ValueError, match='tau must be a positive number'):
        maxq_mask(W, 2, 4, tau=tau)


def test_check_nm_and_eligibility():
    check_nm(2, 4)  # fine
    with pytest.raises(ValueError, match='n must be <= m .* got n=8, m=4'):
        check_nm(8, 4)
    assert is_nm_eligible(W, 4) and is_nm_eligible((16, 8), 8) and is_nm_eligible([2, 16, 1, 1], 16)
    assert not is_nm_eligible(torch.randn(8, 3, 7, 7), 4)  # the stem
    assert not is_nm_eligible(torch.randn(8), 4) and not is_nm_eligible((0, 8), 4)
    with pytest.raises(ValueError, match='m must be >= 1'):
        is_nm_eligible(W, 0)


@pytest.mark.parametrize('fn', [is_nm_sparse, nm_compliance])
def test_reports_refuse_what_they_cannot_measure(fn):
    with pytest.raises(ValueError, match=r'm=4 must divide the 3 input channels'):
        fn(torch.randn(4, 3, 3, 3), 2, 4)
    with pytest.raises(ValueError, match='non-finite values'):
        fn(with_value(NAN), 2, 4)
    with pytest.raises(ValueError, match='n must be <= m'):
        fn(W, 5, 4)


def test_summary_and_ste_check_the_mask():
    with pytest.raises(ValueError, match=r'mask shape \(4, 8\) must equal the weight shape'):
        nm_figures(W, 2, 4, mask=torch.ones(4, 8))
    with pytest.raises(ValueError, match='mask of shape .* has non-finite values'):
        nm_figures(W, 2, 4, mask=torch.full_like(W, NAN))
    with pytest.raises(ValueError, match='mask shape'):
        apply_mask(W, torch.ones(4, 8))
    with pytest.raises(ValueError, match='lam must be a positive number'):
        srste_decay_term(W, torch.ones_like(W), lam=-1.0)
    with pytest.raises(ValueError, match='lam must be a positive number'):
        srste_decay_(torch.nn.Parameter(W.clone()), torch.ones_like(W), lam=NAN)


@pytest.mark.parametrize('args, match', [
    (('step', 1, 0, 5), r"unknown schedule kind 'step'; valid kinds are "
     r"\('linear', 'cubic', 'cos', 'exp'\)"),
    (('Linear', 1, 0, 5), 'unknown schedule kind'),
    (('linear', 1, 6, 5), r'start must be <= end, got start=6, end=5'),
    (('linear', -1, 0, 5), 'step must be an integer >= 0'),
    (('linear', 1, -2, 5), 'start must be an integer >= 0'),
    (('cos', 1.5, 0, 5), 'step must be an integer >= 0'),
    (('exp', 1, 0, 5.0), 'end must be an integer >= 0'),
    (('cubic', True, 0, 5), 'step must be an integer >= 0'),
])
def test_bad_schedule_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        preserve_rate(*args)
