"""The masks off the CPU: no host-device sync, deterministic-algorithms safe, same masks.

No GPU is needed: ``meta`` tensors raise on any host read (``.item()``, ``bool(t)``,
``nonzero()``, boolean-mask indexing), and a dispatch mode lists the ATen ops the masks run.
CPU tensors take the same sync-free path with ``_select.CPU_TIE_CHECK = False``; the tests
check that it gives exactly the masks of the CPU path (and of the sort-based reference).
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mmdet_maxq.sparsity import _select, maxq_mask, nm_mask
from mmdet_maxq.sparsity.validation import check_finite
from .reference import reference_maxq_mask
from .weights import distinct_weight, resnet50_eligible_shapes, tied_weight

# (n, m, preserve): 2:4 fully sparse, 2:8 half way through the schedule, 1:16 at its start.
NM_PRESERVE = [(2, 4, 0.0), (2, 8, 0.5), (1, 16, 1.0)]
SYNC_OPS = {torch.ops.aten.nonzero, torch.ops.aten._local_scalar_dense, torch.ops.aten.item,
            torch.ops.aten.is_nonzero, torch.ops.aten.masked_select, torch.ops.aten.equal}


@pytest.fixture
def sync_free_on_cpu(monkeypatch):
    """CPU tensors take exactly the path of every other device."""
    monkeypatch.setattr(_select, 'CPU_TIE_CHECK', False)


class OpRecorder(TorchDispatchMode):
    """Records every ATen op with its arguments and result."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.calls.append((func, args, kwargs, out))
        return out

    def ops(self):
        return [func.overloadpacket for func, *_ in self.calls]

    def host_reads(self):
        """The recorded ops that read a tensor value on the host (a sync off the CPU)."""
        bad = []
        for func, args, kwargs, out in self.calls:
            packet = func.overloadpacket
            if packet in SYNC_OPS:
                bad.append(str(func))
            elif packet in (torch.ops.aten.index, torch.ops.aten.index_put,
                            torch.ops.aten.index_put_, torch.ops.aten._index_put_impl_):
                indices = args[1] if len(args) > 1 else kwargs.get('indices', ())
                if any(i is not None and i.dtype in (torch.bool, torch.uint8) for i in indices):
                    bad.append(f'{func} with a boolean index')
        return bad

    def float_cumsums(self):
        return [str(func) for func, _, _, out in self.calls
                if func.overloadpacket in (torch.ops.aten.cumsum, torch.ops.aten.cumsum_)
                and out.dtype.is_floating_point]


@pytest.mark.parametrize('n, m, preserve', NM_PRESERVE)
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_meta_tensors_every_resnet50_conv(n, m, preserve, dtype):
    """Any host read raises on ``meta``: every ResNet-50 conv's masks are computed without."""
    shapes = resnet50_eligible_shapes(m)
    assert {s[2:] for s in shapes} == {(1, 1), (3, 3)} and len(shapes) == 52
    for shape in shapes:
        weight = torch.empty(shape, dtype=dtype, device='meta')
        for fn in (maxq_mask, nm_mask):
            mask = fn(weight, n, m, preserve, name='backbone.layer1.0.conv2')
            assert mask.device.type == 'meta', (fn.__name__, shape)
            assert mask.shape == weight.shape and mask.dtype == dtype, (fn.__name__, shape)
            assert mask.is_contiguous(), (fn.__name__, shape)


@pytest.mark.parametrize('shape, n, m', [
    (shape, n, m) for shape in [(6, 16, 5, 5), (8, 4, 3, 3), (10, 32), (4, 8, 1, 3)]
    for n, m in [(1, 4), (3, 4), (4, 4), (6, 8)] if shape[1] % m == 0])
def test_meta_tensors_other_shapes(shape, n, m):
    """5x5, grouped (C = 4), linear and non-square kernels, half precision."""
    weight = torch.empty(shape, dtype=torch.float16, device='meta')
    for preserve in (0.0, 0.25, 1.0):
        for fn in (maxq_mask, nm_mask):
            mask = fn(weight, n, m, preserve)
            assert mask.shape == weight.shape and mask.dtype == torch.float16


@pytest.mark.parametrize('n, m, preserve', NM_PRESERVE)
def test_dispatched_ops_read_nothing_on_the_host(n, m, preserve):
    """The ATen ops of the sync-free path: no host read, no floating-point cumsum."""
    recorder = OpRecorder()
    with recorder:
        for shape in resnet50_eligible_shapes(m):
            weight = torch.empty(shape, device='meta')
            maxq_mask(weight, n, m, preserve)
            nm_mask(weight, n, m, preserve)
    ops = recorder.ops()
    assert recorder.host_reads() == []
    assert torch.ops.aten.cumsum in ops  # the running counts are there, in integers
    assert recorder.float_cumsums() == []
    assert torch.ops.aten._assert_async in ops  # the finite check, asynchronous


def test_recorder_sees_host_reads():
    """The check above would catch a sync: the CPU tie check reads values on the host."""
    weight = distinct_weight((8, 16, 3, 3), seed=1)
    recorder = OpRecorder()
    with recorder:
        maxq_mask(weight, 2, 8, 0.5)
        torch.arange(4.0)[torch.arange(4.0) > 1]  # a boolean-mask gather
    assert 'aten._local_scalar_dense.default' in recorder.host_reads()
    assert any('boolean index' in r for r in recorder.host_reads())


@pytest.mark.parametrize('kind', ['random', 'zeros', 'repeated', 'sparse'])
def test_cpu_tensors_on_the_sync_free_path_read_only_the_finite_check(sync_free_on_cpu, kind):
    weight = tied_weight((8, 16, 3, 3), kind, seed=2)
    for n, m, preserve in NM_PRESERVE:
        recorder = OpRecorder()
        with recorder:
            maxq_mask(weight, n, m, preserve)
        # The finite check raises at once on the CPU: its one read is the only one.
        assert recorder.host_reads() == ['aten._local_scalar_dense.default']
        assert recorder.float_cumsums() == []


def _weights():
    """Random, tie-heavy, half-precision and already-folded weights of conv and linear shapes."""
    cases = []
    for shape in [(16, 32, 1, 1), (8, 32, 3, 3), (12, 64)]:
        seed = sum(shape)
        for kind in ['random', 'zeros', 'repeated', 'sparse', 'constant']:
            cases.append((f'{kind}-{shape}', tied_weight(shape, kind, seed=seed)))
        g = torch.Generator().manual_seed(seed)
        random = torch.randn(shape, generator=g)
        cases += [(f'bf16-{shape}', random.bfloat16()), (f'fp16-{shape}', random.half()),
                  (f'bf16-small-ints-{shape}', torch.randint(-3, 4, shape, generator=g).bfloat16()),
                  (f'distinct-{shape}', distinct_weight(shape, seed=seed)),
                  (f'float64-repeated-{shape}', tied_weight(shape, 'repeated', seed).double())]
    return cases


WEIGHTS = _weights()
NM = [(1, 4), (2, 4), (3, 4), (2, 8), (4, 8), (1, 16)]


@pytest.mark.parametrize('label, weight', WEIGHTS, ids=[label for label, _ in WEIGHTS])
@pytest.mark.parametrize('n, m', NM)
def test_cpu_path_equals_sync_free_path(monkeypatch, label, weight, n, m):
    for preserve in (0.0, 0.3, 1.0):
        for fold in (None, 'nm', 'maxq'):  # folded weights are exactly N:M: ties at zero
            w = weight
            if fold:
                fn = nm_mask if fold == 'nm' else maxq_mask
                w = weight * fn(weight, n, m)
            monkeypatch.setattr(_select, 'CPU_TIE_CHECK', True)
            cpu = maxq_mask(w, n, m, preserve), nm_mask(w, n, m, preserve)
            monkeypatch.setattr(_select, 'CPU_TIE_CHECK', False)
            sync_free = maxq_mask(w, n, m, preserve), nm_mask(w, n, m, preserve)
            where = (label, fold, preserve)
            assert torch.equal(cpu[0], sync_free[0]), where
            assert torch.equal(cpu[1], sync_free[1]), where
            assert torch.equal(cpu[0], reference_maxq_mask(w, n, m, preserve)), where


@pytest.mark.parametrize('tie_check', [True, False])
def test_deterministic_algorithms_do_not_raise(monkeypatch, tie_check):
    monkeypatch.setattr(_select, 'CPU_TIE_CHECK', tie_check)
    cases = [(distinct_weight((16, 32, 3, 3), seed=3), 2, 8, 0.5),
             (tied_weight((8, 16, 3, 3), 'repeated', seed=4), 2, 4, 0.0),
             (tied_weight((8, 32, 1, 1), 'zeros'), 1, 16, 1.0),
             (torch.randn(12, 64).bfloat16(), 4, 8, 0.3)]
    wanted = [(maxq_mask(w, n, m, p), nm_mask(w, n, m, p)) for w, n, m, p in cases]
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        # Deterministic mode also fills new tensors with NaN: nothing may read them unwritten.
        got = [(maxq_mask(w, n, m, p), nm_mask(w, n, m, p)) for w, n, m, p in cases]
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)
    for (soft, hard), (want_soft, want_hard) in zip(got, wanted):
        assert torch.equal(soft, want_soft) and torch.equal(hard, want_hard)


def test_autocast_does_not_change_the_mask():
    w = distinct_weight((16, 32, 3, 3), seed=5)
    want = maxq_mask(w, 2, 8, 0.5), nm_mask(w, 2, 8, 0.5)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = maxq_mask(w, 2, 8, 0.5), nm_mask(w, 2, 8, 0.5)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_non_finite_off_the_cpu_is_an_async_assert_naming_the_layer(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, '_assert_async', lambda cond, msg: calls.append((cond, msg)))
    weight = torch.empty(8, 16, 3, 3, device='meta')
    maxq_mask(weight, 2, 8, name='backbone.layer3.1.conv2')
    nm_mask(weight, 2, 8, name='backbone.layer3.1.conv2')
    assert len(calls) == 2
    for cond, msg in calls:
        assert cond.device.type == 'meta' and cond.dtype == torch.bool and cond.numel() == 1
        assert msg == ('backbone.layer3.1.conv2 of shape (8, 16, 3, 3) has non-finite values '
                       '(NaN or Inf); fix the training divergence or the checkpoint first')


def test_async_message_fits_the_cuda_kernel_buffer(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, '_assert_async', lambda cond, msg: calls.append(msg))
    check_finite(torch.empty(3, device='meta'), name='x' * 400, sync=False)
    assert len(calls[0]) == 250 and calls[0].startswith('x' * 200)


def test_assert_async_exists_with_a_message():
    torch._assert_async(torch.ones((), dtype=torch.bool, device='meta'), 'fine')  # a no-op
    torch._assert_async(torch.tensor(True), 'fine')
    with pytest.raises(RuntimeError, match='layer name'):
        torch._assert_async(torch.tensor(False), 'layer name')


def test_synchronous_callers_keep_the_value_error():
    """``check_finite`` raises ValueError at once by default (the reports rely on it)."""
    bad = torch.tensor([1.0, float('nan')])
    for sync in (True, False):  # a CPU tensor is always checked at once
        with pytest.raises(ValueError, match='mask of shape \\(2,\\) has non-finite values'):
            check_finite(bad, name='mask', sync=sync)
