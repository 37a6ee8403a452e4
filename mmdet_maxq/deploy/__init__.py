"""Export of a folded, verified N:M checkpoint that plain MMDetection or mmpretrain loads
(tools/deploy.py)."""
from mmdet_maxq import requires_openmmlab  # noqa: F401  (first: a clear error without the stack)
from .export import (PACKAGE_HOOKS, DeployError, ExportResult, VerificationError,
                     check_sparse_config, deploy_paths, export_verified, fold_sparse_model,
                     plain_config, verify_export)
from .kinds import CLASSIFIER, DETECTOR, KINDS, ModelKind, kind_of_model
from .verify import (DEFAULT_TOLERANCE, Check, ImageCheck, LayerCheck, VerificationReport,
                     check_nm_layers, compare_one, compare_predictions, run_plain_process,
                     sample_batches)

__all__ = [
    'PACKAGE_HOOKS', 'DeployError', 'ExportResult', 'VerificationError', 'check_sparse_config',
    'deploy_paths', 'export_verified', 'fold_sparse_model', 'plain_config', 'verify_export',
    'CLASSIFIER', 'DETECTOR', 'KINDS', 'ModelKind', 'kind_of_model', 'DEFAULT_TOLERANCE',
    'Check', 'ImageCheck', 'LayerCheck', 'VerificationReport', 'check_nm_layers', 'compare_one',
    'compare_predictions', 'run_plain_process', 'sample_batches'
]
