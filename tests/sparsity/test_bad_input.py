import pytest
import torch

from mmdet_maxq.sparsity import is_nm_sparse, maxq_mask, nm_mask


@pytest.mark.parametrize('fn', [nm_mask, maxq_mask])
@pytest.mark.parametrize('weight, n, m, kwargs, match', [
    (torch.randn(4, 8, 3, 3), 0, 4, {}, 'n must be >= 1'),
    (torch.randn(4, 8, 3, 3), 5, 4, {}, 'n must be <= m'),
    (torch.randn(4, 8, 3, 3), 2.0, 4, {}, 'n must be an integer'),
    (torch.randn(4, 6, 3, 3), 2, 4, {}, 'm=4 must divide the 6 input channels'),
    (torch.randn(4, 8, 3), 2, 4, {}, 'must be a 4-D conv weight'),
    (torch.randn(8), 2, 4, {}, 'must be a 4-D conv weight'),
    (torch.full((4, 8, 1, 1), float('nan')), 2, 4, {}, 'non-finite values'),
    (torch.tensor([[1.0, float('inf'), 0, 0]]), 2, 4, {}, 'non-finite values'),
    (torch.randn(4, 8, 1, 1), 2, 4, dict(preserve=1.5), 'preserve must be a number in'),
    (torch.arange(32).reshape(4, 8), 2, 4, {}, 'floating-point'),
])
def test_bad_input_names_the_argument(fn, weight, n, m, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(weight, n, m, **kwargs)


def test_bad_tau_and_report_input():
    with pytest.raises(ValueError, match='tau must be a positive number'):
        maxq_mask(torch.randn(4, 8, 1, 1), 2, 4, tau=0.0)
    with pytest.raises(ValueError, match='not N:M-eligible'):
        is_nm_sparse(torch.randn(4, 3, 3, 3), 2, 4)
