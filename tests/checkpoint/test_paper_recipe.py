"""The real recipe: a sparse ImageNet checkpoint in the paper's layout -> convert -> the COCO
config's detector with MMDetection's R50 settings (``frozen_stages=1``, ``norm_eval=True``).

The detector's first forward must be the ImageNet model's (``W * S(W)`` at preserve rate 0, the
state that model ended in), for MaxQ (raw import) and SR-STE (folded import); a folded
checkpoint fed to MaxQ fine-tuning is refused. The end-to-end test then fine-tunes, deploys and
evaluates with plain MMDetection.
"""
import os.path as osp
import re

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmdet_maxq  # noqa: F401
from mmdet_maxq.models import sparse_layers
from mmdet_maxq.sparsity import is_nm_sparse
from ..conftest import REPO, SINGLE_THREAD, data_options, run_tool
from ..paper_layout import (build_paper_model, paper_backbone_features, paper_state_dict,
                            random_images)

TINY_R50 = 'configs/synthetic/faster-rcnn_r50-tiny-maxq-2of8_fpn_synthetic.py'
# Same converted file for every test of a method: each conversion is one tool run.
CONVERT = {'maxq': [], 'srste': ['--method', 'srste']}


@pytest.fixture(scope='module')
def paper_checkpoints(tmp_path_factory):
    """``{method: (paper model, converted checkpoint path)}`` for a narrow 2:8 ResNet-50."""
    root = tmp_path_factory.mktemp('paper')
    out = {}
    for method, flags in CONVERT.items():
        model = build_paper_model(depth=50, base_channels=16, n=2, m=8, seed=3, method=method)
        src = root / f'paper_{method}.pth'
        torch.save(paper_state_dict(model), src)
        dst = root / f'resnet50-tiny_{method}-2of8.pth'
        run_tool(['tools/convert_checkpoint.py', str(src), str(dst), '--n', '2', '--m', '8',
                  *flags], env=SINGLE_THREAD)
        out[method] = (model, str(dst))
    return out


def _detector(checkpoint, method):
    cfg = Config.fromfile(osp.join(REPO, TINY_R50))
    cfg.model.backbone.init_cfg.checkpoint = checkpoint
    cfg.model.sparsity.method = method
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    model.init_weights()  # MMDetection's Pretrained init: loads the converted backbone
    return model


@pytest.mark.parametrize('method', ['maxq', 'srste'])
def test_first_forward_equals_the_imagenet_models(paper_checkpoints, method):
    paper, checkpoint = paper_checkpoints[method]
    detector = _detector(checkpoint, method)
    backbone = detector.backbone
    assert backbone.frozen_stages == 1 and backbone.norm_eval
    detector.train()  # training mode, as in the first iteration: frozen BN stays in eval
    assert not backbone.layer1[0].bn1.training and not backbone.layer2[0].bn1.training
    assert all(not p.requires_grad for p in backbone.layer1.parameters())
    assert len(sparse_layers(detector)) == 52
    images = random_images(batch=2, size=64, seed=7)
    with torch.no_grad():
        ours = backbone(images)
    theirs = paper_backbone_features(paper, images)
    assert len(ours) == len(theirs) == 4
    for level, (a, b) in enumerate(zip(ours, theirs)):
        assert a.shape == b.shape, level
        scale = float(b.abs().max())
        assert scale > 0
        err = float((a - b).abs().max()) / scale
        assert err < 1e-4, f'stage {level + 1}: relative difference {err:.2e}'


def test_multipliers_applied_once_mean_kept_multiplier_matches_the_paper_mask(paper_checkpoints):
    paper, checkpoint = paper_checkpoints['maxq']
    detector = _detector(checkpoint, 'maxq')
    detector.eval()
    with torch.no_grad():
        detector.backbone(random_images(batch=1, size=32))
    conv = detector.backbone.layer3[0].conv2
    paper_mask = dict(paper.named_modules())['layer3.0.convbn2'].mask
    assert torch.equal(conv.mask, paper_mask)
    kept = conv.mask[conv.mask > 0]
    assert 1.5 < float(kept.mean()) < 2.8  # applied once (about 3 when applied twice)


def test_folded_checkpoint_into_maxq_fine_tuning_is_refused(paper_checkpoints):
    _, folded = paper_checkpoints['srste']  # folded W * L: exactly 2:8
    with pytest.raises(ValueError, match=r'backbone\.layer\d\.\d\.conv\d: the loaded weight is '
                       r'already exactly 2:8 sparse'):
        _detector(folded, 'maxq')


def test_real_recipe_end_to_end(paper_checkpoints, synthetic_coco, tmp_path):
    """Paper checkpoint -> convert -> MaxQ fine-tune (real R50 settings, a few iterations) ->
    deploy -> plain MMDetection (mmdet_maxq not importable) evaluates; exactly 2:8."""
    _, checkpoint = paper_checkpoints['maxq']
    work = tmp_path / 'work'
    run_tool(['tools/train.py', TINY_R50, '--work-dir', str(work), '--cfg-options',
              f'model.backbone.init_cfg.checkpoint={checkpoint}', 'train_cfg.max_epochs=1',
              'train_cfg.val_interval=2', 'train_dataloader.dataset.indices=4',
              *data_options(synthetic_coco)], env=SINGLE_THREAD)
    trained = str(work / 'epoch_1.pth')
    out = tmp_path / 'deploy' / 'model.pth'
    proc = run_tool(['tools/deploy.py', TINY_R50, trained, str(out), '--num-images', '2',
                     '--cfg-options', f'model.backbone.init_cfg.checkpoint={checkpoint}',
                     'model.test_cfg.rcnn.score_thr=0.0', *data_options(synthetic_coco)],
                    env=SINGLE_THREAD)
    assert '52 of 52 folded convs exactly 2:8' in proc.stdout + proc.stderr
    state = torch.load(out, map_location='cpu', weights_only=True)['state_dict']
    eligible = [k for k, v in state.items() if k.startswith('backbone.') and
                k.endswith('.weight') and v.dim() == 4 and v.shape[1] % 8 == 0]
    assert len(eligible) == 52
    for key in eligible:
        assert is_nm_sparse(state[key], 2, 8), key
    # Frozen stages kept the ImageNet weights, folded at rate 0.
    imagenet = torch.load(checkpoint, map_location='cpu', weights_only=True)['state_dict']
    w = imagenet['layer1.0.conv2.weight']
    from mmdet_maxq.sparsity import maxq_mask
    assert torch.equal(state['backbone.layer1.0.conv2.weight'], w * maxq_mask(w, 2, 8))
    proc = run_tool(['-I', '-c', PLAIN_EVALUATION, str(out.with_suffix('.py')), str(out),
                     str(tmp_path / 'eval'), synthetic_coco], env=SINGLE_THREAD)
    assert re.search(r'coco/bbox_mAP: -?[0-9.]+', proc.stdout + proc.stderr), proc.stdout


PLAIN_EVALUATION = """
import sys
sys.modules['mmdet_maxq'] = None  # plain MMDetection only
from mmengine.config import Config
from mmengine.runner import Runner
config, checkpoint, work_dir, root = sys.argv[1:]
cfg = Config.fromfile(config)
root = root.rstrip('/') + '/'
for loader in ('test_dataloader', 'val_dataloader'):
    cfg[loader].dataset.data_root = root
cfg.test_evaluator.ann_file = root + 'annotations/instances_val.json'
cfg.val_evaluator.ann_file = root + 'annotations/instances_val.json'
cfg.work_dir = work_dir
cfg.load_from = checkpoint
Runner.from_cfg(cfg).test()
"""
