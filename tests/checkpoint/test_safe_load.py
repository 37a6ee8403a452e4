"""Safe loading of MMEngine checkpoints under torch.load(weights_only=True)."""
import collections
import os
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

import mmdet_maxq  # noqa: F401  installs the allow-list


class NotAllowed:
    pass


class SneakyGetattr:
    """Pickles as getattr(HistoryBuffer, '__init__'): a getattr the allow-list must refuse."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, '__init__')


def test_message_hub_state_loads_with_weights_only(tmp_path):
    hub = MessageHub.get_instance('safe-load-test')
    hub.update_scalar('train/loss', 1.5)
    hub.update_scalar('train/loss', np.float64(0.5))
    hub.update_info('dataset_meta', dict(classes=('a', 'b')))
    ckpt = dict(message_hub=hub.state_dict(), counter=collections.Counter([3, 3, 5]),
                array=np.arange(4, dtype=np.int64), scalar=np.float32(2.0),
                state_dict=collections.OrderedDict(w=torch.ones(2)))
    path = tmp_path / 'ok.pth'
    torch.save(ckpt, path)
    loaded = torch.load(path, weights_only=True)
    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer)
    assert buffer.mean() == pytest.approx(1.0)
    assert buffer.statistics('current') == pytest.approx(0.5)
    assert loaded['counter'] == collections.Counter({3: 2, 5: 1})
    assert loaded['array'].tolist() == [0, 1, 2, 3] and float(loaded['scalar']) == 2.0


@pytest.mark.parametrize('payload', [NotAllowed(), SneakyGetattr(), collections.deque([1])])
def test_other_objects_still_refused(tmp_path, payload):
    path = tmp_path / 'bad.pth'
    torch.save(dict(state_dict={}, extra=payload), path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def _roundtrip(tmp_path, obj):
    path = tmp_path / 'ckpt.pth'
    torch.save(obj, path)
    return torch.load(path, map_location='cpu', weights_only=True)


@pytest.mark.parametrize('dtype', ['float64', 'float32', 'float16', 'int64', 'int32', 'uint8',
                                   'uint32', 'bool'])
@pytest.mark.parametrize('shape', [(0, ), (0, 3), (2, 0)])
def test_empty_numpy_arrays_load(tmp_path, dtype, shape):
    array = np.zeros(shape, dtype=dtype)
    loaded = _roundtrip(tmp_path, dict(array=array, full=np.ones(3, dtype=dtype)))['array']
    assert isinstance(loaded, np.ndarray)
    assert loaded.dtype == np.dtype(dtype) and loaded.shape == shape


def test_empty_history_buffer_loads(tmp_path):
    buffer = HistoryBuffer()
    assert buffer.data[0].size == 0
    loaded = _roundtrip(tmp_path, dict(buffer=buffer, empty=np.array([]),
                                       empty_int=np.array([], dtype=np.int64)))
    restored = loaded['buffer']
    assert isinstance(restored, HistoryBuffer) and restored.data[0].size == 0
    restored.update(2.0)
    assert restored.mean() == pytest.approx(2.0)
    assert loaded['empty'].dtype == np.float64 and loaded['empty_int'].dtype == np.int64


def test_real_message_hub_state_loads(tmp_path):
    # A buffer that logged nothing (np.array([]) inside), kept across resume.
    hub = MessageHub.get_instance('safe-load-hub-test',
                                  log_scalars=dict(never_logged=HistoryBuffer()),
                                  resumed_keys=dict(never_logged=True))
    for step in range(5):
        hub.update_scalar('train/loss', 1.0 / (step + 1))
        hub.update_scalar('train/lr', np.float32(0.02))
        hub.update_scalar('train/iter_time', 0.5, count=2)
    hub.update_info('epoch', 3)
    hub.update_info('iter', 120)
    hub.update_info('seed', np.int64(7))
    hub.update_info('dataset_meta', dict(classes=('a', 'b'), palette=[(220, 20, 60)]))
    hub.update_info_dict(dict(experiment_name='exp', max_iters=np.int64(1000)))
    state = hub.state_dict()
    loaded = _roundtrip(tmp_path, dict(meta=dict(epoch=3, iter=120, seed=7),
                                       message_hub=state,
                                       random=np.random.get_state()))['message_hub']
    assert loaded['log_scalars']['train/loss'].mean() == pytest.approx(
        state['log_scalars']['train/loss'].mean())
    assert loaded['log_scalars']['never_logged'].data[0].size == 0
    assert loaded['runtime_info']['dataset_meta']['palette'] == [(220, 20, 60)]
    assert int(loaded['runtime_info']['seed']) == 7
    restored = MessageHub.get_instance('safe-load-hub-restored')
    restored.load_state_dict(loaded)
    assert restored.get_scalar('train/lr').current() == pytest.approx(0.02)


class _Call:
    """Pickles as a call of ``func(*args)``: what a malicious checkpoint does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize('payload', [
    collections.deque([1]),
    _Call(os.system, 'echo pwned'),
    _Call(eval, '1 + 1'),
    _Call(exec, 'x = 1'),
    _Call(bytes, 10),  # bytes is admitted only as bytes() with no argument
    _Call(getattr, np.ndarray, 'tofile'),
    _Call(collections.defaultdict, list),
    NotAllowed(),
], ids=['deque', 'os.system', 'eval', 'exec', 'bytes(10)', 'getattr-ndarray', 'defaultdict',
        'custom-class'])
def test_every_other_global_still_refused(tmp_path, payload):
    path = tmp_path / 'bad.pth'
    torch.save(dict(state_dict={}, message_hub=dict(log_scalars={'x': HistoryBuffer()}),
                    extra=payload), path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
