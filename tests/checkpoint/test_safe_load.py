import collections
import pickle

import numpy as np
import pytest
import torch

import mmdet_maxq  # noqa: F401  installs the allow-list
from mmengine.logging import HistoryBuffer, MessageHub


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
