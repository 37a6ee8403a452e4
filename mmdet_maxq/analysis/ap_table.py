"""Collect COCO box/mask AP from MMDetection work dirs into the paper's Markdown table.

Where MMEngine 0.10 (the ``Runner`` with its default ``LoggerHook`` and ``LocalVisBackend``)
writes evaluation results, ``<ts>`` being the run's ``%Y%m%d_%H%M%S`` timestamp:

* ``tools/test.py``: ``WORK_DIR/<ts>/<ts>.json``, one JSON object of the test metrics
  (``LoggerHook.after_test_epoch``), e.g. ``{"coco/bbox_mAP": 0.374, ...}``.
* validation during training: ``WORK_DIR/<ts>/vis_data/scalars.json``, one JSON object per line
  (``LocalVisBackend.add_scalars``); validation lines hold the metrics and ``step``.
* the config: ``WORK_DIR/<ts>/vis_data/config.py`` (``LocalVisBackend.add_config``) and
  ``WORK_DIR/<config name>.py`` (``Runner.dump_config``).

Metric keys are ``<prefix>/<bbox|segm>_mAP[_50|_75]`` (``CocoMetric``'s default prefix is
``coco``), with a ``val/`` or ``test/`` in front when ``log_with_hierarchy`` is on. Values are
fractions in [0, 1]; the table shows percentages with one decimal.
"""
import json
import os
import os.path as osp
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

TIMESTAMP = re.compile(r'^\d{8}_\d{6}$')
METRIC = re.compile(r'^(?:(?:val|test)/)?(?:(?P<prefix>.+)/)?(?P<task>bbox|segm)_mAP'
                    r'(?P<iou>_50|_75)?$')
COLUMNS = ('model', 'method', 'N:M', 'box AP', 'box AP50', 'box AP75', 'mask AP', 'mask AP50',
           'mask AP75')
METRIC_COLUMNS = (('bbox', ''), ('bbox', '_50'), ('bbox', '_75'), ('segm', ''), ('segm', '_50'),
                  ('segm', '_75'))
METHOD_NAMES = {'dense': 'Dense', 'srste': 'SR-STE', 'maxq': 'MaxQ'}
METHOD_ORDER = ('dense', 'srste', 'maxq')
DETECTOR_NAMES = {
    'FasterRCNN': 'Faster R-CNN',
    'MaskRCNN': 'Mask R-CNN',
    'RetinaNet': 'RetinaNet',
    'FCOS': 'FCOS',
}


class ResultsError(ValueError):
    """A work dir that is missing, or whose results or config cannot be read."""


class MissingResultsError(ResultsError):
    """A work dir that holds no evaluation results (yet)."""


@dataclass
class Evaluation:
    """The evaluation chosen for one work dir.

    Attributes:
        source (str): The file it was read from.
        kind (str): ``'test'`` or ``'val'``.
        step (int, optional): The ``step`` of a validation line (epoch or iteration).
        metrics (dict): ``(task, iou)`` -> value in [0, 1], e.g. ``('bbox', '_50')``.
        run_dir (str): The ``WORK_DIR/<ts>`` folder it belongs to.
    """
    source: str
    kind: str
    metrics: Dict[Tuple[str, str], float]
    run_dir: str
    step: Optional[int] = None


@dataclass
class Row:
    """One table row."""
    model: str
    method: str
    n: Optional[int]
    m: Optional[int]
    metrics: Dict[Tuple[str, str], float]
    work_dir: str = ''
    evaluation: Optional[Evaluation] = field(default=None, repr=False)

    @property
    def nm(self) -> str:
        """``'N:M'``, or ``'-'`` for dense rows."""
        return f'{self.n}:{self.m}' if self.n is not None else '-'


def extract_metrics(record: Dict[str, object]) -> Dict[Tuple[str, str], float]:
    """Pick the COCO box/mask AP values out of one logged record.

    When several metric prefixes are present (several evaluators), ``coco`` wins, else the
    first one seen.

    Args:
        record (dict): A test JSON object or a ``scalars.json`` line.

    Returns:
        dict: ``(task, iou)`` -> value; empty when the record holds no AP.
    """
    by_prefix: Dict[str, Dict[Tuple[str, str], float]] = {}
    for key, value in record.items():
        hit = METRIC.match(key)
        if hit and isinstance(value, (int, float)) and not isinstance(value, bool):
            by_prefix.setdefault(hit.group('prefix') or '', {})[
                (hit.group('task'), hit.group('iou') or '')] = float(value)
    if not by_prefix:
        return {}
    return by_prefix.get('coco', next(iter(by_prefix.values())))


def _run_dirs(work_dir: str) -> List[str]:
    """``WORK_DIR/<ts>`` folders, newest first; the work dir itself when it is one."""
    names = sorted((d for d in os.listdir(work_dir)
                    if TIMESTAMP.match(d) and osp.isdir(osp.join(work_dir, d))), reverse=True)
    runs = [osp.join(work_dir, d) for d in names]
    if not runs and osp.isdir(osp.join(work_dir, 'vis_data')):
        runs = [work_dir]
    return runs


def _read_test(run_dir: str) -> Optional[Evaluation]:
    path = osp.join(run_dir, f'{osp.basename(osp.normpath(run_dir))}.json')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        try:
            record = json.load(f)
        except json.JSONDecodeError as err:
            raise ResultsError(f'cannot parse test results {path}: {err}') from err
    metrics = extract_metrics(record) if isinstance(record, dict) else {}
    return Evaluation(path, 'test', metrics, run_dir) if metrics else None


def _read_last_val(run_dir: str) -> Optional[Evaluation]:
    path = osp.join(run_dir, 'vis_data', 'scalars.json')
    if not osp.isfile(path):
        return None
    last = None
    with open(path) as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):
                continue  # a run killed while appending leaves a cut last line
            raise ResultsError(f'cannot parse {path} line {number}: {err}') from err
        metrics = extract_metrics(record) if isinstance(record, dict) else {}
        if metrics:
            last = Evaluation(path, 'val', metrics, run_dir, record.get('step'))
    return last


def find_evaluation(work_dir: str) -> Evaluation:
    """The most recent evaluation of a work dir: the newest test, else the newest validation.

    Args:
        work_dir (str): An MMDetection ``--work-dir``.

    Returns:
        Evaluation: The chosen results.

    Raises:
        ResultsError: When the folder is missing (:class:`MissingResultsError` when it holds
            no results).
    """
    if not osp.isdir(work_dir):
        raise ResultsError(f'work dir {work_dir} does not exist')
    runs = _run_dirs(work_dir)
    for reader in (_read_test, _read_last_val):
        for run in runs:
            found = reader(run)
            if found is not None:
                return found
    raise MissingResultsError(
        f'no evaluation results in {work_dir}: expected WORK_DIR/<timestamp>/<timestamp>.json '
        '(written by tools/test.py) or bbox_mAP / segm_mAP lines in '
        'WORK_DIR/<timestamp>/vis_data/scalars.json (validation during training); '
        f'found {len(runs)} run folder(s). Run tools/test.py CONFIG CHECKPOINT --work-dir '
        f'{work_dir}')


def find_config(work_dir: str, run_dir: Optional[str] = None) -> str:
    """The config dump that belongs to a run.

    Args:
        work_dir (str): The work dir.
        run_dir (str, optional): ``WORK_DIR/<ts>`` of the chosen evaluation; its
            ``vis_data/config.py`` is preferred.

    Returns:
        str: Path of the config file.

    Raises:
        ResultsError: When there is none.
    """
    if run_dir is not None and osp.isfile(osp.join(run_dir, 'vis_data', 'config.py')):
        return osp.join(run_dir, 'vis_data', 'config.py')
    dumps = [osp.join(work_dir, f) for f in os.listdir(work_dir) if f.endswith('.py')]
    if not dumps:
        raise ResultsError(f'no config dump in {work_dir}: expected WORK_DIR/<config name>.py or '
                           'WORK_DIR/<timestamp>/vis_data/config.py as the MMEngine Runner writes')
    return max(dumps, key=osp.getmtime)


def _type_name(cfg: dict) -> str:
    """The class name of a config's ``type`` (``'mmdet.MaskRCNN'`` -> ``'MaskRCNN'``)."""
    return str(cfg.get('type', '?')).split('.')[-1]


def model_name(detector: dict) -> str:
    """A readable model name such as ``'Mask R-CNN R-50'``.

    Args:
        detector (dict): The detector config (``model``, a plain or a ``SparseDetector`` one).

    Returns:
        str: Detector name and backbone.
    """
    kind = _type_name(detector)
    if kind == 'CascadeRCNN':
        has_mask = bool((detector.get('roi_head') or {}).get('mask_head'))
        name = 'Cascade Mask R-CNN' if has_mask else 'Cascade R-CNN'
    else:
        name = DETECTOR_NAMES.get(kind, kind)
    backbone = detector.get('backbone') or {}
    bb_type, depth = _type_name(backbone), backbone.get('depth')
    if bb_type.startswith('ResNet') and depth:
        bb_name = f'R-{depth}'
    elif bb_type == 'ResNeXt' and depth:
        bb_name = f'X-{depth}-{backbone.get("groups", 32)}x{backbone.get("base_width", 4)}d'
    else:
        bb_name = bb_type if not depth else f'{bb_type}-{depth}'
    return f'{name} {bb_name}' if backbone else name


def describe_model(model: dict) -> Tuple[str, str, Optional[int], Optional[int]]:
    """Model name, method and N:M of a ``model`` config.

    Args:
        model (dict): ``cfg.model``: a ``SparseDetector`` config or a plain detector (dense).

    Returns:
        tuple: ``(model name, method, n, m)``; ``n``/``m`` are None for dense models.
    """
    if _type_name(model) != 'SparseDetector':
        return model_name(model), 'dense', None, None
    from mmdet_maxq.models.sparsify import SparsitySettings

    sparsity = dict(model.get('sparsity') or {})
    method = sparsity.get('method', SparsitySettings.method)
    detector = model.get('detector')
    name = model_name(detector if isinstance(detector, dict)
                      else dict(model, type=detector or '?'))
    if method == 'dense':
        return name, method, None, None
    return name, method, sparsity.get('n', SparsitySettings.n), sparsity.get(
        'm', SparsitySettings.m)


def read_row(work_dir: str) -> Row:
    """Build the table row of one work dir.

    Args:
        work_dir (str): An MMDetection ``--work-dir``.

    Returns:
        Row: Its model, method, N:M and AP values.

    Raises:
        ResultsError: No results, or no readable config.
    """
    from mmengine.config import Config

    evaluation = find_evaluation(work_dir)
    config = find_config(work_dir, evaluation.run_dir)
    try:
        cfg = Config.fromfile(config, import_custom_modules=False)
    except (SyntaxError, KeyError, ValueError, ImportError, OSError) as err:
        raise ResultsError(f'cannot parse config {config}: {type(err).__name__}: {err}') from err
    if not isinstance(cfg.get('model'), dict):
        raise ResultsError(f'config {config} has no model dict')
    name, method, n, m = describe_model(cfg.model.to_dict())
    return Row(name, method, n, m, evaluation.metrics, work_dir, evaluation)


def _natural(text: str) -> List:
    return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', text)]


def sort_rows(rows: Sequence[Row]) -> List[Row]:
    """Dense baselines first, then by model, N:M (denser first) and method (SR-STE, MaxQ).

    Args:
        rows (Sequence[Row]): Rows in any order; ties keep their order.

    Returns:
        list[Row]: Sorted rows.
    """
    def key(row: Row):
        dense = row.n is None
        density = -(row.n / row.m) if not dense else 0.0
        method = METHOD_ORDER.index(row.method) if row.method in METHOD_ORDER else len(
            METHOD_ORDER)
        return (not dense, _natural(row.model), density, row.m or 0, method, row.method)

    return sorted(rows, key=key)


def format_percent(value: Optional[float]) -> str:
    """``0.3744`` -> ``'37.4'``; None -> ``'-'``."""
    return '-' if value is None else f'{100 * value:.1f}'


def format_table(rows: Sequence[Row]) -> str:
    """The Markdown table (rows as given).

    Args:
        rows (Sequence[Row]): Table rows.

    Returns:
        str: Markdown, ending with a newline.
    """
    lines = ['| ' + ' | '.join(COLUMNS) + ' |',
             '| ' + ' | '.join(['---'] * 3 + ['---:'] * 6) + ' |']
    for row in rows:
        cells = [row.model, METHOD_NAMES.get(row.method, row.method), row.nm]
        cells += [format_percent(row.metrics.get(col)) for col in METRIC_COLUMNS]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def collect_rows(work_dirs: Sequence[str], skip_missing: bool = False
                 ) -> Tuple[List[Row], List[str]]:
    """Read every work dir and sort the rows.

    Args:
        work_dirs (Sequence[str]): MMDetection work dirs.
        skip_missing (bool): Leave out work dirs without results (with a warning) instead of
            raising. A work dir that does not exist, or whose config or result files cannot be
            read, is an error either way.

    Returns:
        tuple: ``(sorted rows, warnings)``.

    Raises:
        ResultsError: A work dir has no results (unless ``skip_missing``) or no config.
    """
    rows, warnings = [], []
    for work_dir in work_dirs:
        try:
            rows.append(read_row(work_dir))
        except MissingResultsError as err:
            if not skip_missing:
                raise
            warnings.append(f'skipped: {err}')
    return sort_rows(rows), warnings
