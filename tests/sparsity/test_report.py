"""Compliance and sparsity summaries."""
import pytest
import torch

from mmdet_maxq.sparsity import is_nm_sparse, maxq_mask, nm_compliance, nm_figures, nm_mask


def test_compliance_counts_blocks():
    w = torch.ones(2, 8, 1, 1)  # 4 blocks of 4
    assert nm_compliance(w, 2, 4) == 0.0 and not is_nm_sparse(w, 2, 4)
    w[0, 0:2] = 0  # block 0 has 2 non-zeros
    assert nm_compliance(w, 2, 4) == 0.25
    w[1, :] = 0
    w[0, 4:7] = 0
    assert nm_compliance(w, 2, 4) == 1.0 and is_nm_sparse(w, 2, 4)
    assert not is_nm_sparse(w, 1, 4) and nm_compliance(w, 1, 4) == 0.75  # block 0 has 2
    w[0, 2] = 0.0
    assert is_nm_sparse(w, 1, 4)


def test_blocks_follow_input_channels_of_conv_and_linear():
    conv = torch.zeros(1, 4, 2, 2)
    conv[0, :, 0, 0] = 1  # one block of 4 non-zeros; the same values across kernel positions
    assert nm_compliance(conv, 2, 4) == 0.75
    linear = torch.zeros(2, 8)
    linear[1, 4:8] = 1
    assert nm_compliance(linear, 2, 4) == 0.75


def test_figures_of_masked_layers():
    w = torch.randn(4, 16, 3, 3)
    mask = maxq_mask(w, 2, 8, preserve=0.5)
    s = nm_figures(w, 2, 8, mask=mask)
    assert s.shape == (4, 16, 3, 3) and s.numel == w.numel() and s.eligible
    assert s.compliance == pytest.approx(0.5) and s.compliant is False
    assert s.sparsity == pytest.approx(0.5 * 6 / 8)
    assert s.mean_multiplier == pytest.approx(float(mask[mask != 0].mean()))
    assert 1 <= s.mean_multiplier <= 3
    full = nm_figures(w, 2, 8, mask=maxq_mask(w, 2, 8))
    assert full.compliant is True and full.sparsity == pytest.approx(0.75)
    hard = nm_figures(w, 2, 8, mask=nm_mask(w, 2, 8))
    assert hard.mean_multiplier == 1.0


def test_figures_without_mask_and_of_ineligible_layers():
    dense = nm_figures(torch.randn(4, 16, 3, 3), 2, 8)
    assert dense.eligible and dense.compliant is False and dense.sparsity == 0.0
    assert dense.mean_multiplier is None
    stem = nm_figures(torch.randn(8, 3, 7, 7), 2, 8)
    assert stem.eligible is False and stem.compliant is False
    assert stem.compliance is None and stem.mean_multiplier is None
    # An ineligible layer full of zeros is still not reported as N:M compliant.
    zeros = nm_figures(torch.zeros(8, 3, 7, 7), 2, 8)
    assert zeros.sparsity == 1.0 and zeros.compliant is False
    sparse = torch.zeros(4, 8)
    sparse[:, ::4] = 1.0
    folded = nm_figures(sparse, 2, 4)
    assert folded.compliant is True and folded.sparsity == 0.75
    assert nm_figures(sparse, 2, 4, mask=torch.zeros(4, 8)).mean_multiplier is None


def test_figures_count_blocks_zeros_and_the_densest_block():
    """The counts every report sums: blocks along the input features of a linear weight."""
    w = torch.ones(3, 8)  # 6 blocks of 4
    w[0, 0:3] = 0  # 1 non-zero in block (0, 0)
    w[1, 4:6] = 0  # 2 non-zeros in block (1, 1)
    mask = torch.full_like(w, 2.0)
    mask[2, 0] = 0  # block (2, 0): 3 non-zeros of W * mask
    s = nm_figures(w, 2, 4, mask=mask)
    assert (s.numel, s.zeros, s.nonzero, s.blocks, s.nm_blocks) == (24, 6, 18, 6, 2)
    assert s.max_block_nonzeros == 4 and s.compliance == pytest.approx(2 / 6)
    assert s.mean_multiplier == 2.0
    # Blocks run along the input features (axis 1), not the outputs.
    linear = torch.zeros(4, 8)
    linear[:, :2] = 1.0
    assert nm_figures(linear, 2, 4).compliant is True
    assert nm_figures(linear.t().contiguous(), 2, 4).compliant is False
    assert nm_figures(torch.randn(8, 3), 2, 4).eligible is False
