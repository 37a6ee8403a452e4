"""The 2:4 speed path on a GPU: semi-structured weights give the dense model's outputs.

Marked ``cuda``: ``tests/conftest.py`` skips it where no CUDA device is available. Needs
compute capability >= 8.0 (skipped below that, with the reason). Plain PyTorch: runs without
OpenMMLab.
"""
import pytest
import torch
import torch.nn as nn

from mmdet_maxq.sparsity import is_nm_sparse, nm_mask
from mmdet_maxq.sparsity.semi_structured import (Conv1x1AsLinear, convs_as_linear, default_backend,
                                                 to_semi_structured)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.filterwarnings('ignore:The PyTorch API of SparseSemiStructuredTensor'),
]
BACKENDS = ['cusparselt', 'cutlass']


@pytest.fixture(autouse=True)
def ampere_or_later():
    if torch.cuda.is_available() and torch.cuda.get_device_capability() < (8, 0):
        pytest.skip('2:4 semi-structured kernels need compute capability >= 8.0')


def fold(model):
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.Linear, nn.Conv2d, Conv1x1AsLinear)):
                mod.weight.mul_(nm_mask(mod.weight, 2, 4))
    return model


def sparse_forward(model, x, backend):
    """``model(x)``; skipped (with PyTorch's reason) where its CUTLASS 2:4 kernels refuse this
    GPU: its libtorch_cuda carries 'Supported only on GPUs with compute capability 8.x'."""
    try:
        return model(x)
    except RuntimeError as err:
        if backend == 'cutlass' and 'compute capability 8.x' in str(err):
            pytest.skip(f'PyTorch refuses CUTLASS 2:4 on {torch.cuda.get_device_name()}: '
                        f'{str(err).splitlines()[0]}')
        raise


def close(out, want, dtype):
    scale = want.float().abs().max()
    tol = 1e-2 if dtype == torch.float16 else 4e-2
    assert float((out.float() - want.float()).abs().max()) <= tol * float(scale)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_linear_layers_give_the_dense_outputs(backend, dtype):
    torch.manual_seed(0)
    model = fold(nn.Sequential(nn.Linear(256, 512), nn.GELU(), nn.Linear(512, 256),
                               nn.Linear(256, 100)))
    model = model.cuda().to(dtype).eval()
    x = torch.randn(8, 37, 256, device='cuda', dtype=dtype)
    with torch.no_grad():
        want = model(x)
        report = to_semi_structured(model, backend=backend)
        out = sparse_forward(model, x, backend)
    assert report.converted == ['0', '2'], report.summary()
    assert 'shape (100, 256)' in report.dense['3']
    assert isinstance(model[0].weight, torch.sparse.SparseSemiStructuredTensor)
    close(out, want, dtype)


@pytest.mark.parametrize('backend', BACKENDS)
def test_1x1_convs_channels_last_give_the_conv_outputs(backend):
    torch.manual_seed(0)
    model = fold(nn.Sequential(nn.Conv2d(64, 128, 1), nn.ReLU(), nn.Conv2d(128, 128, 3,
                                                                           padding=1),
                               nn.Conv2d(128, 256, 1, stride=2)))
    model = model.cuda().half().eval().to(memory_format=torch.channels_last)
    x = torch.randn(2, 64, 20, 20, device='cuda', dtype=torch.half).contiguous(
        memory_format=torch.channels_last)
    with torch.no_grad():
        want = model(x)
        assert convs_as_linear(model) == ['0', '3']
        report = to_semi_structured(model, backend=backend)
        out = sparse_forward(model, x, backend)
    assert report.converted == ['0', '3'] and not report.dense
    assert out.is_contiguous(memory_format=torch.channels_last)
    close(out, want, torch.float16)


def test_what_is_not_2_4_or_half_stays_dense():
    torch.manual_seed(0)
    dense = nn.Linear(128, 128).cuda().half()
    full = nn.Linear(128, 128).cuda()  # float32
    fold(full)
    model = nn.Sequential(dense, full)
    report = to_semi_structured(model)
    assert report.backend == default_backend()
    assert not report.converted
    assert 'not exactly 2:4' in report.dense['0'] and 'torch.float32' in report.dense['1']
    assert is_nm_sparse(full.weight, 2, 4)
