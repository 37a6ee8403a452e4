"""Import of a checkpoint in the paper's own layout, checked against the paper model's forward.

The paper-layout ResNets come from :mod:`tests.paper_layout` (written from the layout in
``docs/design.md``, with BN statistics measured from their own ``W * S(W)`` forward). They are
converted by ``tools/convert_checkpoint.py`` and loaded into a plain MMDetection ``ResNet`` through
``init_cfg=dict(type='Pretrained')``, as a user's config does:

* ``--method srste`` folds ``W * mask``: the plain ResNet alone reproduces the paper model;
* ``--method maxq`` (the default) imports the raw ``W``: the plain ResNet with each eligible
  conv computing ``W * maxq_mask(W)`` (what the sparse detector computes) reproduces it, while
  folding first and masking again (the soft multipliers applied twice) does not.
"""
import pytest
import torch
from mmdet.models.backbones import ResNet

from mmdet_maxq.checkpoint import convert_state_dict
from mmdet_maxq.sparsity import is_nm_eligible, is_nm_sparse, maxq_mask, nm_mask
from tests.conftest import run_tool
from tests.paper_layout import (build_paper_model, paper_backbone_features, paper_state_dict,
                                random_images)

N, M, BASE = 2, 8, 16
pytestmark = pytest.mark.usefixtures('one_thread')

CASES = [(50, 'srste'), (18, 'srste'), (50, 'maxq'), (18, 'maxq')]
# The tool runs in one subprocess for every case (importing the stack takes most of its time):
# each run is ``tools/convert_checkpoint.py`` executed as ``__main__`` with its own argv.
RUN_TOOL = """
import runpy, sys
for tag, argv in {cases!r}:
    print('=== case', tag, flush=True)
    sys.argv = ['tools/convert_checkpoint.py'] + argv
    runpy.run_path('tools/convert_checkpoint.py', run_name='__main__')
"""


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    """``{(depth, method): (paper model, converted checkpoint path, tool stdout)}``."""
    folder = tmp_path_factory.mktemp('paper_layout')
    models, runs = {}, []
    for depth, method in CASES:
        model = build_paper_model(depth, BASE, N, M, seed=depth, method=method)
        src, dst = folder / f'paper_r{depth}_{method}.pth', folder / f'r{depth}_{method}.pth'
        torch.save(paper_state_dict(model), src)
        models[depth, method] = model, str(dst)
        runs.append((f'{depth}-{method}', [str(src), str(dst), '--n', str(N), '--m', str(M),
                                           '--method', method]))
    proc = run_tool(['-c', RUN_TOOL.format(cases=runs)], env=dict(OMP_NUM_THREADS='1'))
    outputs = dict(chunk.split('\n', 1) for chunk in proc.stdout.split('=== case ')[1:])
    return {key: (model, dst, outputs[f'{key[0]}-{key[1]}'])
            for key, (model, dst) in models.items()}


def plain_resnet(depth, checkpoint):
    """A plain MMDetection ResNet that loads ``checkpoint`` the way a config does."""
    backbone = ResNet(depth=depth, base_channels=BASE, out_indices=(0, 1, 2, 3),
                      style='pytorch', frozen_stages=1, norm_eval=True,
                      init_cfg=dict(type='Pretrained', checkpoint=checkpoint))
    backbone.init_weights()
    state = torch.load(checkpoint, map_location='cpu', weights_only=True)['state_dict']
    loaded = backbone.state_dict()
    assert list(loaded) == list(state)  # no missing or unexpected key
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key  # init_cfg loaded every tensor
    backbone.eval()  # MMDetection's ResNet.train() returns None
    return backbone


def assert_features_close(actual, expected, rtol=1e-4):
    assert len(actual) == len(expected) == 4
    for stage, (a, e) in enumerate(zip(actual, expected), start=1):
        assert a.shape == e.shape, stage
        scale = float(e.abs().max())
        err = float((a - e).abs().max())
        assert err <= rtol * scale, f'layer{stage}: max error {err:.3g} of scale {scale:.3g}'


def max_relative_error(actual, expected):
    return max(float((a - e).abs().max() / e.abs().max()) for a, e in zip(actual, expected))


def remask_(backbone, method='maxq'):
    """Make every eligible conv compute ``W * S(W)`` (or ``W * L(W)``), as the detector does."""
    count = 0
    with torch.no_grad():
        for module in backbone.modules():
            if isinstance(module, torch.nn.Conv2d) and is_nm_eligible(module.weight, M):
                weight = module.weight
                mask = maxq_mask(weight, N, M) if method == 'maxq' else nm_mask(weight, N, M)
                weight.mul_(mask)
                count += 1
    return count


@pytest.mark.parametrize('depth', [50, 18])
def test_srste_fold_reproduces_paper_features(converted, depth):
    model, ckpt, out = converted[depth, 'srste']
    assert 'folded' in out and 'fixed point' in out
    meta = torch.load(ckpt, weights_only=True)['meta']
    assert (meta['method'], meta['folded'], meta['source_format']) == ('srste', True, 'maxq')
    assert (meta['depth'], meta['base_channels'], meta['stem_channels']) == (depth, BASE, BASE)
    backbone = plain_resnet(depth, ckpt)
    images = random_images(2, 64, seed=7)
    with torch.no_grad():
        feats = backbone(images)
    assert_features_close(feats, paper_backbone_features(model, images))
    # Folded weights are a fixed point of SR-STE's hard mask: masking again changes nothing.
    eligible = remask_(backbone, 'srste')
    assert eligible == (52 if depth == 50 else 19)
    with torch.no_grad():
        assert_features_close(backbone(images), paper_backbone_features(model, images))


@pytest.mark.parametrize('depth', [50, 18])
def test_maxq_raw_import_reproduces_paper_features(converted, depth):
    model, ckpt, out = converted[depth, 'maxq']
    assert 'imported the raw weights W' in out and 'twice' in out
    saved = torch.load(ckpt, weights_only=True)
    assert (saved['meta']['method'], saved['meta']['folded']) == ('maxq', False)
    paper = paper_state_dict(model, prefix='')['state_dict']
    # the raw weights, not W * mask
    assert torch.equal(saved['state_dict']['layer2.0.conv2.weight'],
                       paper['layer2.0.convbn2.conv.weight'])
    backbone = plain_resnet(depth, ckpt)
    images = random_images(2, 64, seed=7)
    expected = paper_backbone_features(model, images)
    with torch.no_grad():
        raw = backbone(images)
    assert max_relative_error(raw, expected) > 1e-2  # the masks do matter
    remask_(backbone)
    with torch.no_grad():
        assert_features_close(backbone(images), expected)
    for name, module in backbone.named_modules():
        if isinstance(module, torch.nn.Conv2d) and is_nm_eligible(module.weight, M):
            assert is_nm_sparse(module.weight, N, M), name


def test_folding_then_maxq_applies_the_multipliers_twice():
    """The failure the raw default avoids: fold, then let MaxQ mask the folded weights."""
    model = build_paper_model(18, BASE, N, M, seed=3)
    images = random_images(2, 64, seed=7)
    expected = paper_backbone_features(model, images)
    folded = convert_state_dict(paper_state_dict(model), N, M, fold=True)
    assert folded.checkpoint['meta']['folded']
    backbone = ResNet(depth=18, base_channels=BASE)
    backbone.eval()
    backbone.load_state_dict(folded.checkpoint['state_dict'], strict=True)
    with torch.no_grad():
        assert_features_close(backbone(images), expected)  # fine as a dense / deployed model
    multipliers = []
    with torch.no_grad():
        for module in backbone.modules():
            if isinstance(module, torch.nn.Conv2d) and is_nm_eligible(module.weight, M):
                mask = maxq_mask(module.weight, N, M)
                multipliers.append(mask[mask > 0])
                module.weight.mul_(mask)
        twice = backbone(images)
    raw = torch.cat([conv.mask[conv.mask > 0] for _, conv in model.sparse_layers()])
    # F and P saturate on exactly N:M weights: the kept multiplier jumps (here 1.9 -> 2.9)
    assert float(torch.cat(multipliers).mean()) > float(raw.mean()) + 0.5
    assert max_relative_error(twice, expected) > 0.05


def test_narrow_width_is_inferred_and_reported():
    model = build_paper_model(50, BASE, N, M, seed=1, calib_batches=1)
    result = convert_state_dict(paper_state_dict(model, prefix='module._orig_mod.'), N, M)
    meta = result.checkpoint['meta']
    assert (meta['depth'], meta['base_channels'], meta['stem_channels']) == (50, BASE, BASE)
    assert any('base_channels=16' in w for w in result.warnings)
    stages = {r.stage: (r.layers, r.eligible, r.masked, r.mask_nm) for r in result.stages}
    assert stages['total'] == (53, 52, 52, 52) and stages['stem'] == (1, 0, 0, 0)
    ResNet(depth=50, base_channels=BASE).load_state_dict(
        result.checkpoint['state_dict'], strict=True)
    with pytest.raises(ValueError, match=r'ResNet-50 \(stem_channels=16, base_channels=16'):
        state = paper_state_dict(model)['state_dict']
        state['module.layer3.0.convbn2.conv.weight'] = torch.zeros(64, 32, 3, 3)
        convert_state_dict(state, N, M)
