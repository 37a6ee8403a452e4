"""Export a deployed plain detector to ONNX Runtime with MMDeploy and check its N:M layers.

A manual check, not part of the project's set-up: it needs MMDeploy 1.3.1, ONNX and ONNX
Runtime (see docs/deploy.md for the install into a separate folder on ``PYTHONPATH``). Input:
the files ``tools/deploy.py`` wrote (a plain MMDetection config with a top-level
``test_pipeline`` and the folded checkpoint)::

    PYTHONPATH=/tmp/deploy_site:$PWD python tools/misc/onnx_nm_check.py \\
        deploy/model.py deploy/model.pth deploy/onnx

It writes ``OUT_DIR/end2end.onnx`` (and ``OUT_DIR/deploy_cfg.py``, the deploy config it used:
MMDeploy's ``detection_onnxruntime_dynamic.py`` settings, written here because the MMDeploy
wheel ships no configs), then checks that every layer that the checkpoint's meta lists as
folded appears in the ONNX graph with the same shape and the same zero pattern, exactly N:M
(the exporter may fold a BatchNorm into a conv: that scales each output channel, so the zeros
stay where they are), and runs the graph in ONNX Runtime. A conv is the weight of a ``Conv``
node; a linear layer the constant weight of a ``Gemm`` node (a 2-D input; stored ``(out,
in)`` under ``transB=1``, else ``(in, out)``) or a ``MatMul`` node (a 3-D input such as a
transformer's tokens; stored transposed, ``(in, out)``). The N:M blocks run along the input
features, so a transposed weight is checked transposed back, along its first axis.

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
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from mmengine.config import Config

from mmdet_maxq.sparsity import nm_figures
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
        codebase.update(export_postprocess_mask=False)  # the task stays ObjectDetection
    return Config(dict(
        onnx_config=dict(type='onnx', export_params=True, keep_initializers_as_inputs=False,
                         opset_version=11, save_file='end2end.onnx', input_names=['input'],
                         output_names=outputs, input_shape=None, optimize=True,
                         dynamic_axes=axes),
        codebase_config=codebase,
        backend_config=dict(type='onnxruntime')))


def register_roi_align_symbolic() -> None:
    """Register, in MMDeploy's symbolic registry, RoIAlign for the ONNX Runtime backend at
    opset 11 (``onnx::RoiAlign``, as MMDeploy's default one writes it).

    MMDeploy 1.3.1's default RoIAlign symbolic imports ``_cast_Long`` from
    ``torch.onnx.symbolic_opset9``, which torch 2.13 no longer has, so a two-stage detector
    fails to export. A backend-specific registry entry takes precedence over the default one;
    MMDeploy itself is not changed.
    """
    from mmdeploy.core import SYMBOLIC_REWRITER
    from torch.onnx.symbolic_opset11 import add, select

    @SYMBOLIC_REWRITER.register_symbolic('mmcv.ops.roi_align.__self__', backend='onnxruntime')
    def roi_align_onnxruntime(g, input, rois, output_size, spatial_scale, sampling_ratio,
                              pool_mode, aligned):
        def index(values):
            return g.op('Constant', value_t=torch.tensor(values, dtype=torch.long))

        batch = g.op('Squeeze', select(g, rois, 1, index([0])), axes_i=[1])
        batch = g.op('Cast', batch, to_i=7)  # INT64, what _cast_Long wrote
        boxes = select(g, rois, 1, index([1, 2, 3, 4]))
        if aligned:  # opset < 16 has no coordinate_transformation_mode: shift the boxes
            boxes = add(g, boxes, g.op('Constant', value_t=torch.tensor(
                [-0.5 / spatial_scale], dtype=torch.float)))
        return g.op('RoiAlign', input, boxes, batch, output_height_i=output_size[0],
                    output_width_i=output_size[1], spatial_scale_f=spatial_scale,
                    sampling_ratio_i=sampling_ratio, mode_s=pool_mode)


def export_torchscript(image: np.ndarray, out_dir: str, deploy_cfg: Config, model_cfg: Config,
                       checkpoint: str) -> Tuple[str, np.ndarray, List[np.ndarray]]:
    """``torch2onnx``'s steps with ``torch.onnx.export(dynamo=False)``.

    Returns:
        tuple: ``(ONNX path, the model input, the rewritten PyTorch model's outputs on it)``.
    """
    from mmdeploy.apis import build_task_processor
    from mmdeploy.apis.onnx.passes import optimize_onnx
    from mmdeploy.core import RewriterContext, patch_model
    from mmdeploy.utils import get_dynamic_axes, get_onnx_config

    register_roi_align_symbolic()
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
    with RewriterContext(cfg=cfg, backend='onnxruntime', ir='onnx', opset=11,
                         onnx_custom_passes=optimize_onnx), torch.no_grad():
        forward = patched.forward  # inside the context: the rewritten forward

        def predict(*inputs):  # *inputs: the exporter adds no defaults from the signature
            return forward(*inputs, data_samples=data['data_samples'], mode='predict')

        patched.forward = predict
        torch.onnx.export(patched, (inputs, ), path, export_params=True,
                          input_names=onnx_cfg['input_names'],
                          output_names=onnx_cfg['output_names'], opset_version=11,
                          dynamic_axes=get_dynamic_axes(deploy_cfg, names),
                          keep_initializers_as_inputs=False, dynamo=False)
        reference = [out.numpy() for out in predict(inputs)]
    return path, inputs.numpy(), reference


def _is_nm(weight: np.ndarray, n: int, m: int) -> bool:
    """Every block of ``m`` consecutive input channels keeps at most ``n`` non-zeros (a
    weight in the ``(out, in[, kh, kw])`` layout; see :func:`~mmdet_maxq.sparsity.nm_figures`).
    """
    return nm_figures(torch.from_numpy(np.ascontiguousarray(weight)), n, m).compliant


def _module_name(node_name: str) -> str:
    """The module name of an exported node: ``/backbone/layer1/layer1.0/conv2/Conv`` ->
    ``backbone.layer1.0.conv2`` (the exporter names a child of a ``Sequential`` by its
    parent-qualified name)."""
    parts = []
    for scope in node_name.split('/')[1:-1]:
        if parts and scope.startswith(parts[-1] + '.'):
            parts[-1] = scope
        else:
            parts.append(scope)
    return '.'.join(parts)


def out_in_layout(op_type: str, weight: np.ndarray, trans_b: int = 0) -> Optional[np.ndarray]:
    """The weight of a ``Conv`` / ``Gemm`` / ``MatMul`` node in the module's ``(out, in[, kh,
    kw])`` layout, the one its N:M blocks are counted in (along axis 1), or None for a weight
    that is no conv or linear weight.

    Args:
        op_type (str): The node's op type.
        weight (ndarray): Its constant weight input (input 1).
        trans_b (int): A ``Gemm`` node's ``transB`` attribute: 1 when the weight is stored
            ``(out, in)`` (how ``nn.Linear`` exports on a 2-D input), 0 for ``(in, out)``.

    Returns:
        ndarray, optional: ``weight`` itself, or its transpose for a ``MatMul`` or a ``Gemm``
        with ``transB=0`` (their constant is ``W.T``, ``(in, out)``).
    """
    if op_type == 'Conv':
        return weight if weight.ndim == 4 else None
    if op_type not in ('Gemm', 'MatMul') or weight.ndim != 2:
        return None
    return weight if op_type == 'Gemm' and trans_b else weight.T


def _layer_weights(graph) -> Dict[str, np.ndarray]:
    """Module name -> weight, in the ``(out, in[, kh, kw])`` layout (:func:`out_in_layout`),
    of every ``Conv``, ``Gemm`` and ``MatMul`` node with a constant weight, followed through
    ``Identity`` / ``Constant`` nodes (the exporter shares identical initializers between
    layers that way) and 2-D ``Transpose`` nodes."""
    from onnx import helper, numpy_helper

    inits = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}

    def resolve(name):
        transposed = False
        while name not in inits and name in producers:
            node = producers[name]
            if node.op_type == 'Constant':
                value = numpy_helper.to_array(node.attribute[0].t)
                return value.T if transposed else value
            if node.op_type == 'Transpose':
                perm = [helper.get_attribute_value(a) for a in node.attribute
                        if a.name == 'perm']
                if perm and list(perm[0]) != [1, 0]:
                    return None
                transposed = not transposed
            elif node.op_type != 'Identity':
                return None
            name = node.input[0]
        value = inits.get(name)
        return value.T if transposed and value is not None else value

    weights = {}
    for node in graph.node:
        if node.op_type not in ('Conv', 'Gemm', 'MatMul') or len(node.input) < 2:
            continue
        weight = resolve(node.input[1])
        if weight is None:
            continue
        trans_b = [helper.get_attribute_value(a) for a in node.attribute if a.name == 'transB']
        weight = out_in_layout(node.op_type, weight, trans_b[0] if trans_b else 0)
        if weight is not None:
            weights[_module_name(node.name)] = weight
    return weights


def check_onnx_layers(onnx_path: str, state: Dict[str, torch.Tensor], folded: List[str], n: int,
                      m: int) -> Dict:
    """Find every folded conv and linear layer in the ONNX graph and check its weight keeps
    the N:M pattern.

    A folded layer passes when its ONNX weight, in the ``(out, in[, kh, kw])`` layout, has the
    folded weight's shape, is exactly N:M and is zero wherever the folded weight is (the
    exporter folds the following BatchNorm into a conv, which scales each output channel: the
    zeros stay, and a zero BatchNorm scale makes the whole channel zero).

    Returns:
        dict: ``layers`` (Conv / Gemm / MatMul nodes with a constant weight), ``kept``
        (folded layers that pass), ``same`` (of those, with exactly the folded zero pattern),
        ``failed`` (names).
    """
    import onnx

    weights = _layer_weights(onnx.load(onnx_path).graph)
    kept, same, failed = 0, 0, []
    for name in folded:
        zeros = state[name + '.weight'].numpy() == 0
        weight = weights.get(name)
        if weight is None or weight.shape != zeros.shape or not _is_nm(weight, n, m) \
                or not (weight[zeros] == 0).all():
            failed.append(name)
            continue
        kept += 1
        same += bool(np.array_equal(weight == 0, zeros))
    return dict(layers=len(weights), kept=kept, same=same, failed=failed)


def run_onnxruntime(onnx_path: str, x: np.ndarray) -> Tuple[List[np.ndarray], List[str], float]:
    """Run the graph once on ``x`` (MMDeploy's custom-op library registered when it exists).

    Returns:
        tuple: ``(outputs, their names, seconds)``.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    from mmdeploy.backend.onnxruntime.init_plugins import get_ops_path
    ops = get_ops_path()
    if ops and osp.exists(ops):
        options.register_custom_ops_library(ops)
    session = ort.InferenceSession(onnx_path, options, providers=['CPUExecutionProvider'])
    start = time.perf_counter()
    outputs = session.run(None, {'input': x})
    return outputs, [o.name for o in session.get_outputs()], time.perf_counter() - start


def compare_outputs(reference: List[np.ndarray], outputs: List[np.ndarray]) -> str:
    """ONNX Runtime against PyTorch on the same input: detections, labels, box and score
    differences (boxes relative to ``max(1, largest |coordinate|)``), mask pixels."""
    dets, labels = reference[0][0], reference[1][0]
    ort_dets, ort_labels = outputs[0][0], outputs[1][0]
    if dets.shape != ort_dets.shape:
        return f'detections differ: {len(dets)} in PyTorch, {len(ort_dets)} in ONNX Runtime'
    scale = max(1.0, float(np.abs(dets[:, :4]).max())) if len(dets) else 1.0
    box_diff = np.abs(dets[:, :4] - ort_dets[:, :4]).max(initial=0) / scale
    score_diff = np.abs(dets[:, 4] - ort_dets[:, 4]).max(initial=0)
    text = (f'{len(dets)} output rows, labels equal: {bool(np.array_equal(labels, ort_labels))}, '
            f'max rel. |box| diff {box_diff:.2e}, max |score| diff {score_diff:.2e}')
    if len(reference) > 2:
        text += (f', mask values max |diff| '
                 f'{np.abs(reference[2] - outputs[2]).max(initial=0):.2e}')
    return text


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
        x = np.random.RandomState(0).rand(1, 3, h, w).astype(np.float32)
        reference = None
    else:
        onnx_path, x, reference = export_torchscript(image, args.out_dir, deploy_cfg,
                                                     model_cfg, args.checkpoint)
    print(f'exported {onnx_path} ({osp.getsize(onnx_path) / 1e6:.1f} MB) in '
          f'{time.perf_counter() - start:.1f} s with {args.exporter}')
    folded = sparsity['folded_layers']
    result = check_onnx_layers(onnx_path, saved['state_dict'], folded, sparsity['n'],
                               sparsity['m'])
    what = 'convs' if all(saved['state_dict'][name + '.weight'].dim() == 4
                          for name in folded) else 'layers'
    print(f'ONNX Conv / Gemm / MatMul nodes with a constant weight: {result["layers"]}; folded '
          f'{what} exactly {sparsity["n"]}:{sparsity["m"]} with every pruned weight still zero: '
          f'{result["kept"]} of {len(folded)}, {result["same"]} with the '
          'identical zero pattern' + ('' if result['same'] == result['kept'] else
                                      ', the others with whole channels zeroed by a folded '
                                      'BatchNorm of zero scale'))
    outputs, names, seconds = run_onnxruntime(onnx_path, x)
    shapes = {name: tuple(out.shape) for name, out in zip(names, outputs)}
    print(f'ONNX Runtime outputs {shapes} in {seconds:.3f} s')
    if reference is not None:
        print(f'ONNX Runtime vs PyTorch (MMDeploy-rewritten) on the same input: '
              f'{compare_outputs(reference, outputs)}')
    if result['failed']:
        print(f'missing or not N:M: {result["failed"][:5]}')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
