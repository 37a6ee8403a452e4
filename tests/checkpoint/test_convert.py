"""Import of sparse ImageNet ResNet checkpoints (tools/convert_checkpoint.py)."""
import importlib.util
import os
import os.path as osp
from collections import OrderedDict

import pytest
import torch
from mmdet.models.backbones import ResNet

from mmdet_maxq.checkpoint import convert_state_dict, detect_format, strip_wrapper_prefixes
from mmdet_maxq.sparsity import is_nm_sparse, maxq_mask, nm_mask

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        'convert_checkpoint_tool', osp.join(ROOT, 'tools', 'convert_checkpoint.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL = _load_tool()


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def r18():
    """An mmdet ResNet-18 state dict with random weights and BN statistics."""
    torch.manual_seed(0)
    state = ResNet(depth=18).state_dict()
    for key, value in state.items():
        if key.endswith(('running_mean', 'bias')):
            value.normal_()
        elif key.endswith(('running_var', 'bn1.weight', 'bn2.weight', '.1.weight')):
            value.uniform_(0.5, 1.5)
        elif key.endswith('num_batches_tracked'):
            value.fill_(7)
    return state


def _fc():
    return {'fc.weight': torch.randn(10, 512), 'fc.bias': torch.randn(10)}


def to_torchvision(state):
    out = OrderedDict(state)
    out.update(_fc())
    return out


def to_mmpretrain(state):
    out = OrderedDict(('backbone.' + k, v) for k, v in state.items())
    out.update({'head.' + k: v for k, v in _fc().items()})
    return {'meta': {'epoch': 100}, 'state_dict': out}


_MASKS = {}


def _maxq_mask(key, weight, n, m):
    """``maxq_mask`` cached per layer (the r18 weights never change)."""
    if (key, n, m) not in _MASKS:
        _MASKS[key, n, m] = maxq_mask(weight, n, m)
    return _MASKS[key, n, m]


def to_maxq(state, n, m, prefix='module._orig_mod.'):
    """The paper's layout; returns (checkpoint, {mmdet conv key: mask})."""
    out, masks = OrderedDict(), {}
    for key, value in state.items():
        parts = key.split('.')
        if key.startswith('layer') and parts[2].startswith(('conv', 'bn')):
            idx = parts[2][-1]
            kind = 'conv' if parts[2].startswith('conv') else 'scale'
            new = '.'.join(parts[:2] + [f'convbn{idx}', kind] + parts[3:])
        elif key.startswith('layer') and parts[2] == 'downsample':
            kind = 'conv' if parts[3] == '0' else 'scale'
            new = '.'.join(parts[:2] + ['downsample', kind] + parts[4:])
        else:
            new = key
        out[prefix + new] = value
        if value.dim() == 4 and value.shape[1] % m == 0:
            mask = _maxq_mask(key, value, n, m)
            masks[key] = mask
            out[prefix + new.rsplit('.', 2)[0] + '.mask'] = mask
    out.update({prefix + k: v for k, v in _fc().items()})
    return {'state_dict': out}, masks


def load_strict(depth, state_dict):
    model = ResNet(depth=depth)
    model.load_state_dict(state_dict, strict=True)
    return model.state_dict()


def stage_counts(result):
    return {r.stage: (r.layers, r.eligible, r.nm, r.masked) for r in result.stages}


def test_detect_format_and_prefixes(r18):
    ckpt, _ = to_maxq(r18, 2, 4, prefix='_orig_mod.module._orig_mod.')
    stripped = strip_wrapper_prefixes(ckpt['state_dict'])
    assert 'layer1.0.convbn1.conv.weight' in stripped
    assert detect_format(stripped) == 'maxq'
    assert detect_format(to_torchvision(r18)) == 'torchvision'
    assert detect_format(to_mmpretrain(r18)['state_dict']) == 'mmpretrain'


def test_maxq_fold_roundtrip(r18):
    ckpt, masks = to_maxq(r18, 2, 4)
    result = convert_state_dict(ckpt, 2, 4, method='srste')
    loaded = load_strict(18, result.checkpoint['state_dict'])
    for key, value in r18.items():
        expected = value * masks[key] if key in masks else value
        assert torch.equal(loaded[key], expected), key
        if key in masks:
            assert is_nm_sparse(loaded[key], 2, 4)
    assert stage_counts(result) == {
        'stem': (1, 0, 0, 0), 'layer1': (4, 4, 4, 4), 'layer2': (5, 5, 5, 5),
        'layer3': (5, 5, 5, 5), 'layer4': (5, 5, 5, 5), 'total': (20, 19, 19, 19)}
    meta = result.checkpoint['meta']
    assert meta['folded'] and meta['nm_sparse'] and meta['source_format'] == 'maxq'
    assert (meta['n'], meta['m'], meta['depth']) == (2, 4, 18)
    assert meta['method'] == 'srste' and 'fixed point' in result.decision
    assert result.dropped == ['fc.weight', 'fc.bias']


def test_maxq_no_fold_keeps_raw_weights(r18):
    ckpt, _ = to_maxq(r18, 2, 4)
    result = convert_state_dict(ckpt, 2, 4, fold=False)
    loaded = load_strict(18, result.checkpoint['state_dict'])
    assert all(torch.equal(loaded[k], v) for k, v in r18.items())
    assert not result.checkpoint['meta']['folded']
    assert stage_counts(result)['total'] == (20, 19, 0, 19)
    assert '--no-fold given' in result.decision and 'raw weights' in result.decision
    assert result.stages[-1].mask_nm == 19 and not result.warnings


@pytest.mark.parametrize('method,folded', [('maxq', False), ('srste', True), ('dense', True)])
def test_method_picks_the_default(r18, method, folded):
    ckpt, masks = to_maxq(r18, 2, 4)
    kwargs = {} if method == 'maxq' else dict(method=method)  # maxq is the default
    result = convert_state_dict(ckpt, 2, 4, **kwargs)
    meta = result.checkpoint['meta']
    assert (meta['method'], meta['folded'], meta['n'], meta['m']) == (method, folded, 2, 4)
    assert meta['source_format'] == 'maxq' and meta['fold_decision'] == result.decision
    key = 'layer2.0.conv2.weight'
    expected = r18[key] * masks[key] if folded else r18[key]
    assert torch.equal(result.checkpoint['state_dict'][key], expected)
    assert ('folded 19 stored masks' if folded else 'imported the raw weights') in result.decision
    assert '\n' not in result.decision and not result.warnings
    # Only MaxQ keeps the raw weights, because folding would apply its multipliers twice.
    assert ('soft multipliers twice' in result.decision) == (method == 'maxq')


@pytest.mark.parametrize('method,fold,warns', [('maxq', True, '--fold with --method maxq'),
                                               ('srste', False, '--no-fold with --method srste'),
                                               ('dense', False, '--no-fold with --method dense')])
def test_explicit_fold_overrides_the_method(r18, method, fold, warns):
    ckpt, masks = to_maxq(r18, 2, 4)
    result = convert_state_dict(ckpt, 2, 4, fold=fold, method=method)
    key = 'layer1.1.conv1.weight'
    expected = r18[key] * masks[key] if fold else r18[key]
    assert torch.equal(result.checkpoint['state_dict'][key], expected)
    assert result.checkpoint['meta']['folded'] is fold
    assert 'given' in result.decision and f'overriding the {method} default' in result.decision
    assert any(warns in w for w in result.warnings)


def test_unknown_method(r18):
    with pytest.raises(ValueError, match='unknown method'):
        convert_state_dict(to_torchvision(r18), 2, 4, method='sparse')


def test_no_masks_nothing_to_fold(r18):
    for method in ('maxq', 'srste'):
        result = convert_state_dict(to_torchvision(r18), 2, 4, method=method)
        assert not result.checkpoint['meta']['folded']
        assert result.checkpoint['meta']['method'] == method
        assert 'nothing to fold' in result.decision


@pytest.mark.parametrize('wrap', ['bare', 'model', 'mmpretrain'])
def test_dense_formats_roundtrip(r18, wrap):
    if wrap == 'mmpretrain':
        ckpt, fmt = to_mmpretrain(r18), 'mmpretrain'
    else:
        state = to_torchvision(r18)
        ckpt, fmt = (state if wrap == 'bare' else {'model': state}), 'torchvision'
    result = convert_state_dict(ckpt, 2, 8)
    loaded = load_strict(18, result.checkpoint['state_dict'])
    assert all(torch.equal(loaded[k], v) for k, v in r18.items())
    assert result.source_format == fmt
    assert stage_counts(result)['total'] == (20, 19, 0, 0)
    assert not result.checkpoint['meta']['nm_sparse'] and not result.warnings


def test_missing_num_batches_tracked_is_filled(r18):
    state = {k: v for k, v in r18.items() if not k.endswith('num_batches_tracked')}
    result = convert_state_dict(state, 2, 4)
    load_strict(18, result.checkpoint['state_dict'])
    assert len(result.filled) == 20


def test_resnet50_torchvision_loads_strictly():
    torch.manual_seed(1)
    state = ResNet(depth=50).state_dict()
    result = convert_state_dict(to_torchvision(state), 2, 4)
    load_strict(50, result.checkpoint['state_dict'])
    assert result.depth == 50
    assert stage_counts(result)['total'] == (53, 52, 0, 0)


def test_sparse_torchvision_with_other_pattern_warns(r18):
    state = {k: (v * nm_mask(v, 2, 8) if v.dim() == 4 and v.shape[1] % 8 == 0 else v)
             for k, v in r18.items()}
    result = convert_state_dict(state, 1, 4)
    assert any('2:8' in w for w in result.warnings)


def test_cli_writes_loadable_checkpoint(r18, tmp_path, capsys):
    from mmengine.runner import load_checkpoint

    ckpt, masks = to_maxq(r18, 2, 8)
    src, dst = tmp_path / 'maxq.pth', tmp_path / 'out' / 'backbone.pth'
    torch.save(ckpt, src)
    TOOL.main([str(src), str(dst), '--n', '2', '--m', '8', '--method', 'srste'])
    out = capsys.readouterr().out
    assert 'layer4' in out and 'exactly 2:8' in out and 'wrote' in out
    saved = torch.load(dst, map_location='cpu', weights_only=True)
    assert set(saved) == {'state_dict', 'meta'} and saved['meta']['source'] == 'maxq.pth'

    model = ResNet(depth=18)
    load_checkpoint(model, str(dst), strict=True)  # what PretrainedInit (prefix=None) calls
    key = 'layer3.1.conv2.weight'
    assert torch.equal(model.state_dict()[key], r18[key] * masks[key])

    model = ResNet(depth=18, init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()
    assert torch.equal(model.state_dict()[key], r18[key] * masks[key])
    assert [p.name for p in dst.parent.iterdir()] == ['backbone.pth']


def run_fails(args, dst):
    """Run the CLI, expect one clear error and nothing at dst; return the message."""
    before = open(dst, 'rb').read() if osp.exists(dst) else None
    with pytest.raises(SystemExit) as exc:
        TOOL.main([str(a) for a in args])
    after = open(dst, 'rb').read() if osp.exists(dst) else None
    assert after == before
    folder = osp.dirname(str(dst))
    assert not [f for f in os.listdir(folder) if f.endswith('.tmp')]
    return str(exc.value.code)


@pytest.fixture
def tv_file(r18, tmp_path):
    path = tmp_path / 'tv.pth'
    torch.save(to_torchvision(r18), path)
    return path


@pytest.mark.parametrize('n,m', [(0, 4), (5, 4), (-1, 8)])
def test_cli_invalid_nm(tv_file, n, m):
    dst = tv_file.parent / 'o.pth'
    msg = run_fails([tv_file, dst, '--n', n, '--m', m], dst)
    assert msg.startswith('error:') and str(n) in msg


def test_cli_refuses_existing_dst(tv_file):
    dst = tv_file.parent / 'exists.pth'
    dst.write_bytes(b'keep me')
    msg = run_fails([tv_file, dst, '--n', '2', '--m', '4'], dst)
    assert 'exists' in msg and '--overwrite' in msg
    TOOL.main([str(tv_file), str(dst), '--n', '2', '--m', '4', '--overwrite'])
    assert 'state_dict' in torch.load(dst, weights_only=True)


@pytest.mark.parametrize('damage', ['truncated', 'garbage', 'empty'])
def test_cli_corrupt_file(tv_file, damage):
    data = tv_file.read_bytes()
    bad = tv_file.parent / 'bad.pth'
    bad.write_bytes({'truncated': data[:len(data) // 2], 'garbage': b'\x80not a checkpoint' * 9,
                     'empty': b''}[damage])
    msg = run_fails([bad, tv_file.parent / 'o.pth', '--n', '2', '--m', '4'],
                    tv_file.parent / 'o.pth')
    assert f'cannot read checkpoint {bad}' in msg and 'corrupt or truncated?' in msg


def test_cli_missing_source(tmp_path):
    msg = run_fails([tmp_path / 'nope.pth', tmp_path / 'o.pth', '--n', '2', '--m', '4'],
                    tmp_path / 'o.pth')
    assert 'does not exist' in msg


def _save(tmp_path, obj):
    path = tmp_path / 'src.pth'
    torch.save(obj, path)
    return path


def _fails_on(tmp_path, obj, *extra):
    src = _save(tmp_path, obj)
    return run_fails([src, tmp_path / 'o.pth', '--n', '2', '--m', '4', *extra], tmp_path / 'o.pth')


def test_cli_not_a_resnet(tmp_path):
    msg = _fails_on(tmp_path, {'encoder.weight': torch.zeros(2), 'decoder.weight': torch.zeros(2)})
    assert 'does not look like a ResNet' in msg and 'encoder.weight' in msg


def test_cli_ambiguous(r18, tmp_path):
    obj = dict(to_torchvision(r18), **to_mmpretrain(r18)['state_dict'])
    msg = _fails_on(tmp_path, obj)
    assert 'ambiguous' in msg and 'torchvision' in msg and 'mmpretrain' in msg


def test_cli_shape_and_key_mismatch(r18, tmp_path):
    state = to_torchvision(r18)
    state['layer2.0.conv1.weight'] = torch.zeros(128, 32, 3, 3)
    for key in [k for k in state if k.startswith('layer3.1.bn2.')][:4]:
        del state[key]
    state['layer1.0.extra.weight'] = torch.zeros(3)
    msg = _fails_on(tmp_path, state)
    assert 'does not match a ResNet-18' in msg
    assert 'layer2.0.conv1.weight (128, 32, 3, 3) (expected (128, 64, 3, 3))' in msg
    assert 'missing keys: layer3.1.bn2.weight' in msg and 'layer1.0.extra.weight' in msg


def test_cli_many_missing_keys_are_summarised(r18, tmp_path):
    state = {k: v for k, v in to_torchvision(r18).items() if not k.startswith('layer4.1.bn')}
    msg = _fails_on(tmp_path, state)
    assert '... and 3 more' in msg  # 8 BN entries, 5 shown


def test_cli_unknown_depth(r18, tmp_path):
    state = {k: v for k, v in to_torchvision(r18).items() if not k.startswith('layer3.1.')}
    msg = _fails_on(tmp_path, state)
    assert 'cannot infer the ResNet depth' in msg and '[2, 2, 1, 2]' in msg


def test_cli_format_mismatch(r18, tmp_path):
    msg = _fails_on(tmp_path, to_torchvision(r18), '--format', 'maxq')
    assert '--format maxq' in msg and 'torchvision' in msg


def test_cli_non_finite(r18, tmp_path):
    state = to_torchvision(r18)
    state['layer1.0.conv1.weight'] = state['layer1.0.conv1.weight'].clone()
    state['layer1.0.conv1.weight'][0, 0, 0, 0] = float('nan')
    msg = _fails_on(tmp_path, state)
    assert 'non-finite' in msg and 'layer1.0.conv1.weight' in msg


def test_cli_masks_of_another_pattern(r18, tmp_path):
    ckpt, _ = to_maxq(r18, 4, 8)
    msg = _fails_on(tmp_path, ckpt, '--fold')  # asks for 2:4
    assert 'not 2:4' in msg and 'layer1.0.conv1' in msg
    assert '--n 4 --m 8' in msg and '--no-fold' in msg


def test_cli_masks_of_another_pattern_raw(r18, tmp_path):
    ckpt, _ = to_maxq(r18, 4, 8)
    msg = _fails_on(tmp_path, ckpt)  # the default (--method maxq) checks the stored masks
    assert 'stored masks of 19 masked layer(s) are not 2:4' in msg and 'layer1.0.conv1' in msg
    assert '--n 4 --m 8' in msg


def test_cli_partially_sparse_masks(r18, tmp_path):
    ckpt, _ = to_maxq(r18, 2, 4, prefix='')
    ckpt['state_dict']['layer2.1.convbn2.mask'] = torch.ones_like(
        ckpt['state_dict']['layer2.1.convbn2.mask'])  # saved before sparsity reached 100%
    msg = _fails_on(tmp_path, ckpt, '--method', 'srste')
    assert '1 masked layer(s) are not 2:4: layer2.1.conv2' in msg and '--no-fold' in msg
    src = tmp_path / 'src.pth'
    TOOL.main([str(src), str(tmp_path / 'o.pth'), '--n', '2', '--m', '4', '--no-fold'])
    result = convert_state_dict(torch.load(src, weights_only=True), 2, 4)  # maxq: raw, warns
    assert not result.checkpoint['meta']['folded']
    assert any('stored masks of 1 layer(s) are not 2:4 yet' in w and 'layer2.1.conv2' in w
               for w in result.warnings)


def test_cli_default_reports_raw_import(r18, tmp_path, capsys):
    ckpt, masks = to_maxq(r18, 2, 8)
    src, dst = tmp_path / 'maxq.pth', tmp_path / 'backbone.pth'
    torch.save(ckpt, src)
    TOOL.main([str(src), str(dst), '--n', '2', '--m', '8'])
    out = capsys.readouterr().out
    decision = [line for line in out.splitlines() if line.startswith('--method maxq:')]
    assert len(decision) == 1 and 'imported the raw weights W' in decision[0]
    assert '2:8 masks' in out  # the table counts the dropped masks that were 2:8
    saved = torch.load(dst, map_location='cpu', weights_only=True)
    meta = saved['meta']
    assert (meta['method'], meta['folded'], meta['n'], meta['m']) == ('maxq', False, 2, 8)
    assert meta['source_format'] == 'maxq' and meta['base_channels'] == 64
    key = 'layer3.1.conv2.weight'
    assert torch.equal(saved['state_dict'][key], r18[key])
