"""Export a deployed plain detector to ONNX Runtime with MMDeploy and check its N:M convs.

A manual check, not part of the project's set-up: it needs MMDeploy 1.3.1, ONNX and ONNX
Runtime (see docs/deploy.md for the install into a separate folder on ``PYTHONPATH``). Input:
the files ``tools/deploy.py`` wrote (a plain MMDetection config with a top-level
``test_pipeline`` and the folded checkpoint)::

    PYTHONPATH=/tmp/deploy_site:$PWD python tools/misc/onnx_nm_check.py \\
        deploy/model.py deploy/model.pth deploy/onnx

It writes ``OUT_DIR/end2end.onnx`` (and ``OUT_DIR/deploy_cfg.py``, the deploy config it used:
MMDeploy's ``detection_onnxruntime_dynamic.py`` settings, written here because the MMDeploy
wheel ships no configs), then checks that every conv that the checkpoint's meta lists as
folded appears in the ONNX graph as a ``Conv`` initializer with the same shape and the same
zero pattern, exactly N:M (the exporter may fold a BatchNorm into the conv: that scales each
output channel, so the zeros stay where they are), and runs the graph in ONNX Runtime.

``--exporter mmdeploy`` calls ``mmdeploy.apis.torch2onnx`` unchanged. With torch 2.13 it fails:
MMDeploy calls ``torch.onnx.export`` without ``dynamo=False``, and the default exporter is
the dynamo one. ``--exporter torchscript`` (the default) does what ``torch2onnx`` does (the
task processor builds the model and its input, ``patch_model`` and ``RewriterContext`` apply
MMDeploy's rewrites) and calls ``torch.onnx.export(..., dynamo=False)`` itself; MMDeploy is
not patched.
"""
import argparse
import os
import os.path as osp
import sys
import time
from typing import Dict, List

import numpy as np
import torch
from mmengine.config import Config

from mmdet_maxq.utils.config_utils import pipeline_test_scale

DETECTION_POSTPROCESS = dict(score_threshold=0.05, confidence_threshold=0.005, iou_threshold=0.5,
                             max_output_boxes_per_class=200, pre_top_k=5000, keep_top_k=100,
                             background_label_id=-1)


def deploy_config(with_masks: bool) -> Config:
    """MMDeploy's ``detection_onnxruntime_dynamic.py`` (``instance-seg_...`` with masks).

    Args:
        with_masks (bool): The detector predicts masks (Mask R-CNN).

    Returns:
        Config: The deploy config.
    """
    outputs = ['dets', 'labels'] + (['masks'] if with_masks else [])
    axes = {'input': {0: 'batch', 2: 'height', 3: 'width'},
            'dets': {0: 'batch', 1: 'num_dets'}, 'labels': {0: 'batch', 1: 'num_dets'}}
    if with_masks:
        axes['masks'] = {0: 'batch', 1: 'num_dets', 2: 'height', 3: 'width'}
    codebase = dict(type='mmdet', task='ObjectDetection', model_type='end2end',
                    post_processing=DETECTION_POSTPROCESS)
    if with_masks:
        codebase.update(task='InstanceSegmentation', export_postprocess_mask=False)
    return Config(dict(
        onnx_config=dict(type='onnx', export_params=True, keep_initializers_as_inputs=False,
                         opset_version=11, save_file='end2end.onnx', input_names=['input'],
                         output_names=outputs, input_shape=None, optimize=True,
                         dynamic_axes=axes),
        codebase_config=codebase,
        backend_config=dict(type='onnxruntime')))


def export_torchscript(image: np.ndarray, out_dir: str, deploy_cfg: Config, model_cfg: Config,
                       checkpoint: str) -> str:
    """``torch2onnx``'s steps with ``torch.onnx.export(dynamo=False)``; returns the ONNX path."""
    from mmdeploy.apis import build_task_processor
    from mmdeploy.apis.onnx.passes import optimize_onnx
    from mmdeploy.core import RewriterContext, patch_model
    from mmdeploy.utils import get_dynamic_axes, get_onnx_config

    processor = build_task_processor(model_cfg, deploy_cfg, 'cpu')
    model = processor.build_pytorch_model(checkpoint)
    data, inputs = processor.create_input(image, None,
                                          data_preprocessor=model.data_preprocessor)
    inputs = inputs[0] if isinstance(inputs, list) and len(inputs) == 1 else inputs
    onnx_cfg = get_onnx_config(deploy_cfg)
    names = onnx_cfg['input_names'] + onnx_cfg['output_names']
    path = osp.join(out_dir, onnx_cfg['save_file'])
    ir_cfg = dict(onnx_cfg, type='onnx')
    cfg = Config(dict(deploy_cfg.to_dict(), ir_config=ir_cfg))
    patched = patch_model(model, cfg=cfg, backend='onnxruntime', ir='onnx')
    forward = patched.forward
    patched.forward = lambda *args: forward(*args, data_samples=data['data_samples'],
                                            mode='predict')
    with RewriterContext(cfg=cfg, backend='onnxruntime', ir='onnx', opset=11,
                         onnx_custom_passes=optimize_onnx), torch.no_grad():
        torch.onnx.export(patched, (inputs, ), path, export_params=True,
                          input_names=onnx_cfg['input_names'],
                          output_names=onnx_cfg['output_names'], opset_version=11,
                          dynamic_axes=get_dynamic_axes(deploy_cfg, names),
                          keep_initializers_as_inputs=False, dynamo=False)
    return path


def _is_nm(weight: np.ndarray, n: int, m: int) -> bool:
    """Every block of ``m`` consecutive input channels keeps at most ``n`` non-zeros."""
    out_c, in_c = weight.shape[:2]
    if in_c % m:
        return False
    blocks = np.moveaxis(weight, 1, -1).reshape(-1, in_c // m, m)
    return bool(((blocks != 0).sum(-1) <= n).all())


def check_onnx_convs(onnx_path: str, state: Dict[str, torch.Tensor], folded: List[str], n: int,
                     m: int) -> Dict:
    """Match every folded conv to an ONNX ``Conv`` initializer of its shape and zero pattern.

    Returns:
        dict: ``convs`` (Conv nodes with an initializer weight), ``nm`` (those exactly N:M),
        ``matched`` (folded convs found with the same zero pattern), ``unmatched`` (names).
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(onnx_path).graph
    inits = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    weights = [inits[node.input[1]] for node in graph.node
               if node.op_type == 'Conv' and len(node.input) > 1 and node.input[1] in inits]
    nm = [w for w in weights if _is_nm(w, n, m)]
    unmatched = []
    for name in folded:
        zeros = state[name + '.weight'].numpy() == 0
        if not any(w.shape == zeros.shape and np.array_equal(w == 0, zeros) and _is_nm(w, n, m)
                   for w in nm):
            unmatched.append(name)
    return dict(convs=len(weights), nm=len(nm), matched=len(folded) - len(unmatched),
                unmatched=unmatched)


def run_onnxruntime(onnx_path: str, image_hw) -> Dict[str, tuple]:
    """Run the graph once on a random image (MMDeploy's custom-op library registered when
    its ONNX Runtime build loads); returns the output shapes and the seconds per run."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    from mmdeploy.backend.onnxruntime.init_plugins import get_ops_path
    ops = get_ops_path()
    if ops and osp.exists(ops):
        options.register_custom_ops_library(ops)
    session = ort.InferenceSession(onnx_path, options, providers=['CPUExecutionProvider'])
    x = np.random.RandomState(0).rand(1, 3, *image_hw).astype(np.float32)
    start = time.perf_counter()
    outputs = session.run(None, {'input': x})
    seconds = time.perf_counter() - start
    names = [o.name for o in session.get_outputs()]
    return dict(shapes={k: tuple(v.shape) for k, v in zip(names, outputs)}, seconds=seconds)


def main(argv=None) -> int:
    """Run the export and the checks; returns the exit status (0 when every check passes)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='the plain config tools/deploy.py wrote')
    parser.add_argument('checkpoint', help='the folded checkpoint tools/deploy.py wrote')
    parser.add_argument('out_dir', help='folder for end2end.onnx and deploy_cfg.py')
    parser.add_argument('--exporter', choices=['torchscript', 'mmdeploy'], default='torchscript',
                        help='torch.onnx.export(dynamo=False) in MMDeploy\'s rewrite context '
                        '(default), or mmdeploy.apis.torch2onnx unchanged')
    args = parser.parse_args(argv)
    model_cfg = Config.fromfile(args.config)
    if 'test_pipeline' not in model_cfg:
        print(f'{args.config} has no top-level test_pipeline; MMDeploy needs it')
        return 1
    saved = torch.load(args.checkpoint, map_location='cpu', weights_only=True)
    sparsity = saved['meta']['sparsity']
    with_masks = bool((model_cfg.model.get('roi_head') or {}).get('mask_head'))
    deploy_cfg = deploy_config(with_masks)
    os.makedirs(args.out_dir, exist_ok=True)
    deploy_cfg.dump(osp.join(args.out_dir, 'deploy_cfg.py'))
    h, w = pipeline_test_scale(model_cfg)
    image = np.random.RandomState(1).randint(0, 256, (h, w, 3), dtype=np.uint8)
    start = time.perf_counter()
    if args.exporter == 'mmdeploy':
        from mmdeploy.apis import torch2onnx
        torch2onnx(image, args.out_dir, 'end2end.onnx', deploy_cfg, model_cfg,
                   args.checkpoint, 'cpu')
        onnx_path = osp.join(args.out_dir, 'end2end.onnx')
    else:
        onnx_path = export_torchscript(image, args.out_dir, deploy_cfg, model_cfg,
                                       args.checkpoint)
    print(f'exported {onnx_path} ({osp.getsize(onnx_path) / 1e6:.1f} MB) in '
          f'{time.perf_counter() - start:.1f} s with {args.exporter}')
    result = check_onnx_convs(onnx_path, saved['state_dict'], sparsity['folded_layers'],
                              sparsity['n'], sparsity['m'])
    print(f'ONNX Conv initializers: {result["convs"]}; exactly {sparsity["n"]}:{sparsity["m"]}: '
          f'{result["nm"]}; folded convs found with the same zero pattern: {result["matched"]} '
          f'of {len(sparsity["folded_layers"])}')
    ort_result = run_onnxruntime(onnx_path, (h, w))
    print(f'ONNX Runtime outputs {ort_result["shapes"]} in {ort_result["seconds"]:.3f} s')
    if result['unmatched']:
        print(f'not found exactly N:M: {result["unmatched"][:5]}')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
