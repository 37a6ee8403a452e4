"""RandomStateHook without a training run: what it saves, when it restores, when it gathers."""
import random
import types

import numpy as np
import pytest
import torch
from mmdet.registry import HOOKS as MMDET_HOOKS
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS as ROOT_HOOKS

import mmdet_maxq  # noqa: F401
from mmdet_maxq.engine.hooks import RandomStateHook
from mmdet_maxq.engine.hooks.random_state_hook import _checkpoint_saves_now

LOGGER = types.SimpleNamespace(warning=lambda msg: None)


def _runner(**kwargs):
    defaults = dict(rank=0, epoch=0, iter=0, logger=LOGGER, _resume=True, hooks=[])
    defaults.update(kwargs)
    return types.SimpleNamespace(**defaults)


def _checkpoint_with_state(runner=None):
    random.seed(11)
    np.random.seed(11)
    torch.manual_seed(11)
    checkpoint = {}
    RandomStateHook().before_save_checkpoint(runner or _runner(), checkpoint)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    return checkpoint, expected


def _draws():
    return random.random(), np.random.rand(), torch.rand(1)


def test_visible_to_every_scope():
    from mmpretrain.registry import HOOKS as PRETRAIN_HOOKS

    assert ROOT_HOOKS.get('RandomStateHook') is RandomStateHook
    assert MMDET_HOOKS.get('RandomStateHook') is RandomStateHook
    assert PRETRAIN_HOOKS.get('RandomStateHook') is RandomStateHook


def test_restored_after_mmengine_reseeds_not_before():
    checkpoint, expected = _checkpoint_with_state()
    hook = RandomStateHook()
    hook.after_load_checkpoint(_runner(), checkpoint)
    torch.manual_seed(0)  # what Runner.resume does next: set_randomness(checkpoint seed)
    random.seed(0)
    np.random.seed(0)
    hook.before_train(_runner())
    hook.before_train_epoch(_runner())
    assert _draws() == expected
    torch.manual_seed(0)
    hook.before_train_epoch(_runner(epoch=2))  # once only: later epochs keep their streams
    assert torch.equal(torch.rand(1), (torch.manual_seed(0), torch.rand(1))[1])


def test_load_from_keeps_the_configured_seed():
    checkpoint, expected = _checkpoint_with_state()
    hook = RandomStateHook()
    torch.manual_seed(0)
    hook.after_load_checkpoint(_runner(_resume=False), checkpoint)
    hook.before_train_epoch(_runner())
    assert torch.rand(1) != expected[2]


def test_accepts_states_moved_by_map_location():
    # Runner.resume loads with map_location on the training device; set_rng_state takes a CPU
    # ByteTensor only. A state stored in another dtype stands in for the CUDA copy here; the
    # cuda-marked test resumes with map_location='cuda' for real.
    checkpoint, expected = _checkpoint_with_state()
    state = checkpoint['meta']['random_state'][0]
    state['torch'] = state['torch'].to(torch.int16)
    with pytest.raises(TypeError):
        torch.set_rng_state(state['torch'])
    hook = RandomStateHook()
    hook.after_load_checkpoint(_runner(), checkpoint)
    hook.before_train_epoch(_runner())
    assert torch.rand(1) == expected[2]


def _runner_with_sampler(sampler, batched=False, **kwargs):
    if batched:  # MMDetection's AspectRatioBatchSampler: the loader's own sampler is unseeded
        loader = types.SimpleNamespace(sampler=torch.utils.data.SequentialSampler(range(4)),
                                       batch_sampler=types.SimpleNamespace(sampler=sampler))
    else:
        loader = types.SimpleNamespace(sampler=sampler)
    loop = types.SimpleNamespace(dataloader=loader)
    return _runner(train_loop=loop, _train_loop=loop, **kwargs)


@pytest.mark.parametrize('batched', [False, True])
def test_sampler_seed_saved_and_restored(batched):
    # Without randomness.seed, MMEngine's drawn seed is a numpy integer.
    saving = _runner_with_sampler(types.SimpleNamespace(seed=np.int64(1234)), batched)
    checkpoint = {}
    RandomStateHook().before_save_checkpoint(saving, checkpoint)
    assert checkpoint['meta']['sampler_seed'] == 1234
    assert type(checkpoint['meta']['sampler_seed']) is int
    resumed = types.SimpleNamespace(seed=99)  # a fresh draw of the restarted run
    hook = RandomStateHook()
    hook.after_load_checkpoint(_runner_with_sampler(resumed, batched), checkpoint)
    hook.before_train(_runner_with_sampler(resumed, batched))
    assert resumed.seed == 1234


def test_each_rank_takes_its_own_state():
    checkpoint, _ = _checkpoint_with_state()
    state0 = checkpoint['meta']['random_state'][0]
    torch.manual_seed(12)
    state1 = dict(state0, torch=torch.get_rng_state())
    expected1 = torch.rand(1)
    checkpoint['meta']['random_state'] = {0: state0, 1: state1}
    hook = RandomStateHook()
    hook.after_load_checkpoint(_runner(rank=1), checkpoint)
    torch.manual_seed(0)
    hook.before_train_epoch(_runner(rank=1))
    assert torch.rand(1) == expected1


def test_missing_rank_is_logged_and_reseeded():
    checkpoint, _ = _checkpoint_with_state()
    messages = []
    logger = types.SimpleNamespace(warning=messages.append)
    hook = RandomStateHook()
    hook.after_load_checkpoint(_runner(rank=3, logger=logger), checkpoint)
    assert 'no random state for rank 3 (it has ranks [0])' in messages[0]
    torch.manual_seed(0)
    hook.before_train_epoch(_runner(rank=3))
    assert torch.equal(torch.rand(1), (torch.manual_seed(0), torch.rand(1))[1])


def _ckpt_runner(hook, epoch=0, iter=0, max_epochs=4, max_iters=40):
    return _runner(hooks=[hook], epoch=epoch, iter=iter, max_epochs=max_epochs,
                   max_iters=max_iters)


def test_gathers_only_where_the_checkpoint_hook_saves():
    by_epoch = CheckpointHook(interval=2)
    assert not _checkpoint_saves_now(_ckpt_runner(by_epoch, epoch=0), by_epoch=True)
    assert _checkpoint_saves_now(_ckpt_runner(by_epoch, epoch=1), by_epoch=True)
    assert not _checkpoint_saves_now(_ckpt_runner(by_epoch, epoch=1), by_epoch=False)
    odd = CheckpointHook(interval=2)
    assert _checkpoint_saves_now(_ckpt_runner(odd, epoch=2, max_epochs=3), by_epoch=True)  # last
    by_iter = CheckpointHook(interval=10, by_epoch=False, save_last=False)
    assert _checkpoint_saves_now(_ckpt_runner(by_iter, iter=9), by_epoch=False)
    assert not _checkpoint_saves_now(_ckpt_runner(by_iter, iter=39 - 1), by_epoch=False)
    assert not _checkpoint_saves_now(_runner(hooks=[]), by_epoch=True)


def test_states_gathered_at_the_save_point_are_the_ones_written():
    hook = RandomStateHook()
    runner = _ckpt_runner(CheckpointHook(interval=1), epoch=0)
    torch.manual_seed(21)
    at_gather = torch.get_rng_state()
    hook.after_train_epoch(runner)
    torch.rand(3)  # a lower-priority hook drawing between the gather and the save
    checkpoint = {}
    hook.before_save_checkpoint(runner, checkpoint)
    assert torch.equal(checkpoint['meta']['random_state'][0]['torch'], at_gather)
    later = {}
    hook.before_save_checkpoint(_ckpt_runner(CheckpointHook(interval=1), epoch=1), later)
    assert not torch.equal(later['meta']['random_state'][0]['torch'], at_gather)


def test_infinite_sampler_takes_the_restored_seed_before_its_first_index():
    """IterBasedTrainLoop builds its dataloader iterator before the resume; InfiniteSampler
    reads its seed when the index stream starts, so a seed set in before_train still counts."""
    import itertools

    from mmengine.dataset import InfiniteSampler

    saved = list(itertools.islice(iter(InfiniteSampler(list(range(10)), seed=7)), 25))
    resumed = InfiniteSampler(list(range(10)), seed=123)
    stream = iter(resumed)  # created, not started, as by the loop's __init__
    checkpoint = {'meta': {'sampler_seed': 7, 'random_state': {}}}
    hook = RandomStateHook()
    runner = _runner_with_sampler(resumed)
    hook.after_load_checkpoint(runner, checkpoint)
    hook.before_train(runner)
    assert list(itertools.islice(stream, 25)) == saved
