"""The 2:4 speed path's CPU-testable parts: 1x1 convs as F.linear, eligibility, the refusal.

The conversion itself needs a CUDA GPU (compute capability >= 8.0): tests/cuda/
test_semi_structured_cuda.py.
"""
import pytest
import torch
import torch.nn as nn

from mmdet_maxq.sparsity import nm_mask
from mmdet_maxq.sparsity.semi_structured import (Conv1x1AsLinear, SemiStructuredError,
                                                 check_semi_structured_device, convs_as_linear,
                                                 is_plain_1x1, layer_ineligibility,
                                                 plan_semi_structured, to_semi_structured)


def two_four(shape, dtype=torch.float16, seed=0):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return (w * nm_mask(w, 2, 4)).to(dtype)


@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('channels_last', [True, False])
def test_conv1x1_as_linear_equals_the_conv(stride, bias, channels_last):
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 48, 1, stride=stride, bias=bias)
    x = torch.randn(2, 32, 9, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    module = Conv1x1AsLinear(conv)
    out, want = module(x), conv(x)
    assert out.shape == want.shape
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    assert module.weight.shape == (48, 32) and (module.bias is None) == (not bias)


@pytest.mark.parametrize('conv, reason', [
    (nn.Conv2d(8, 8, 3), 'kernel (3, 3) is not 1x1'),
    (nn.Conv2d(8, 8, 1, groups=2), 'groups=2'),
    (nn.Conv2d(8, 8, 1, padding=1), 'padding=(1, 1)'),
    (nn.Linear(8, 8), 'Linear is not an nn.Conv2d'),
])
def test_only_plain_1x1_convs_become_linear(conv, reason):
    assert not is_plain_1x1(conv)
    with pytest.raises(ValueError, match=reason.replace('(', r'\(').replace(')', r'\)')):
        Conv1x1AsLinear(conv)


def test_convs_as_linear_keeps_the_outputs_and_honours_the_filter():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 32, 1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
                          nn.Conv2d(32, 64, 1, stride=2), nn.Conv2d(64, 16, 1))
    x = torch.randn(1, 16, 8, 8).contiguous(memory_format=torch.channels_last)
    want = model(x)
    names = convs_as_linear(model, filter_fn=lambda name, conv: name != '4')
    assert names == ['0', '3']
    assert isinstance(model[0], Conv1x1AsLinear) and isinstance(model[3], Conv1x1AsLinear)
    assert type(model[2]) is nn.Conv2d and type(model[4]) is nn.Conv2d
    torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-5)


def test_layer_ineligibility_names_each_reason():
    assert layer_ineligibility(two_four((64, 128))) is None
    assert layer_ineligibility(two_four((64, 128), torch.bfloat16)) is None
    assert 'needs torch.float16' in layer_ineligibility(two_four((64, 128), torch.float32))
    assert '2-D' in layer_ineligibility(two_four((64, 128, 1, 1)))
    # (48, 96): a multiple of cuSPARSELt's (16, 16), not of CUTLASS's (32, 64).
    assert layer_ineligibility(two_four((48, 96)), 'cusparselt') is None
    assert '(32, 64) (cutlass)' in layer_ineligibility(two_four((48, 96)), 'cutlass')
    assert '(16, 16)' in layer_ineligibility(two_four((40, 96)), 'cusparselt')
    dense = torch.randn(64, 128).half()
    assert 'not exactly 2:4' in layer_ineligibility(dense)
    three = two_four((64, 128))
    three[0, :4] = torch.tensor([1.0, 2.0, 3.0, 0.0])  # one block with 3 non-zeros
    assert 'not exactly 2:4' in layer_ineligibility(three)
    with pytest.raises(ValueError, match='backend must be one of'):
        layer_ineligibility(two_four((64, 128)), 'tensorrt')


class Block(nn.Module):

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(128, 64)
        self.fc2 = nn.Linear(64, 128)
        self.head = nn.Linear(128, 10)
        self.attn = nn.MultiheadAttention(64, 4)
        self.pw = Conv1x1AsLinear(nn.Conv2d(64, 32, 1))


def test_plan_lists_every_candidate_with_the_reason():
    model = Block().half()
    with torch.no_grad():
        for name in ('fc1', 'head', 'pw'):
            weight = model.get_submodule(name).weight
            weight.copy_(two_four(tuple(weight.shape)))
        model.attn.out_proj.weight.copy_(two_four((64, 64)))
    plan = plan_semi_structured(model, filter_fn=lambda name, mod: name != 'head')
    assert plan.converted == ['fc1', 'pw']
    assert set(plan.dense) == {'fc2', 'attn.out_proj'}
    assert 'not exactly 2:4' in plan.dense['fc2']
    assert 'nn.MultiheadAttention' in plan.dense['attn.out_proj']
    assert '2 weights semi-structured (cusparselt), 2 left dense' in plan.summary()


def test_on_the_cpu_it_refuses_with_one_line():
    model = Block().half()
    with pytest.raises(SemiStructuredError) as info:
        to_semi_structured(model)
    message = str(info.value)
    assert '\n' not in message
    assert message.startswith('2:4 semi-structured weights need a CUDA device')
    assert 'To fix it' in message and 'compute capability 8.0' in message
    assert isinstance(model.fc1.weight, nn.Parameter)
    assert type(model.fc1.weight.data) is torch.Tensor  # nothing converted


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the refusal without CUDA')
def test_no_cuda_at_all_is_one_line_too():
    with pytest.raises(SemiStructuredError, match='none is available') as info:
        check_semi_structured_device()
    assert '\n' not in str(info.value)


def test_mmcv_conv_wrapper_counts_as_plain_and_sparse_convs_do_not():
    from mmcv.cnn.bricks.wrappers import Conv2d as MMCVConv2d

    from mmdet_maxq.models import SparseConv2d

    assert is_plain_1x1(MMCVConv2d(8, 16, 1))
    sparse = SparseConv2d.convert_from(nn.Conv2d(8, 16, 1), 2, 4)
    assert not is_plain_1x1(sparse)
    with pytest.raises(ValueError, match='SparseConv2d has its own forward'):
        Conv1x1AsLinear(sparse)
