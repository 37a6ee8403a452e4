#!/usr/bin/env bash
# The README's main job: train a MaxQ 2:8 Mask R-CNN on the synthetic COCO set with an
# incremental schedule, evaluate box/mask AP with tools/test.py, and show the final N:M
# sparsity of the backbone. Run through `make demo`, which sets up the environment and data.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CONFIG=configs/synthetic/mask-rcnn_r18-tiny-maxq-2of8_fpn_synthetic.py
WORK=${WORK:-work_dirs/demo_maxq_synthetic}

echo "[demo] training $CONFIG -> $WORK"
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK"
CKPT="$(cat "$WORK/last_checkpoint")"
echo "[demo] evaluating $CKPT"
"$PY" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK/test" 2>&1 \
    | grep -E "bbox_mAP_copypaste|segm_mAP_copypaste|Epoch\(test\)"
echo "[demo] N:M sparsity of the trained backbone"
"$PY" tools/sparsity_report.py "$CONFIG" "$CKPT"
