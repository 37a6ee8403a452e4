#!/usr/bin/env bash
# The project's GPU checks and figures in one prepared call (issue 25): about 10 minutes on one
# H200 (compute capability 9.0) once the wheels below are carried, plus the machine's start.
#
# What runs, in this order (each step's output goes to $OUT/<file>.txt as it is measured; a
# failed step is recorded and the next one runs; $OUT/summary.txt is rewritten after every step):
#   torch_only.txt   (PyTorch alone, no OpenMMLab; run first, while mmcv builds beside them)
#     env              GPU, driver, torch, cuSPARSELt
#     masks_tests      pytest -m cuda of tests/cuda/test_cuda_masks.py and
#                      tests/cuda/test_semi_structured_cuda.py
#     mask_speed       benchmarks/mask_speed.py: all 52 ResNet-50 masks, packed refresh core vs
#                      sort-based reference, fp32 and autocast, peak memory
#     deploy_speed_tv  benchmarks/deploy_speed.py --source torchvision: dense vs 2:4 semi-structured
#   mmcv_build.txt   mmcv 2.1.0's CUDA ops built for sm_90 only (the last lines of the build log)
#   refresh_speed.txt  benchmarks/refresh_speed.py: whole-model refresh, eager vs CUDA graph,
#                      fp32 vs autocast, ops, persistent and peak memory
#   train_overhead.txt benchmarks/train_overhead.py --device cuda --amp at 1333x800, batch 2,
#                      Faster R-CNN R50-FPN (dense / SR-STE / MaxQ); last, the same with
#                      --cuda-graph (step train_overhead_graph)
#   tests_cuda.txt   pytest -m cuda tests/cuda (all of them)
#   deploy_speed.txt benchmarks/deploy_speed.py: MMDetection / mmpretrain ResNet-50, Swin-T,
#                      DeiT-S backbones, fp16/bf16, batch 1 and 8, dense vs 2:4
#   summary.txt      every step's exit code and seconds
# At most 8 files come back from the device tool's $OUT: keep it to these 7.
#
# Usage:
#   bash benchmarks/gpu_suite.sh [--device cuda|cpu] [--only STEP,STEP...] [--budget SECONDS]
#   --device cpu   the dry run: every step small, on the CPU, with the environment's own
#                  OpenMMLab (no wheels, no build); a couple of minutes on 2 cores:
#                  PY=.venv/bin/python OUT=/tmp/suite bash benchmarks/gpu_suite.sh --device cpu
#   --only         run only these steps (names above; on the GPU, mmcv_build runs whenever a
#                  chosen step needs mmcv, and builds only when mmcv's ops cannot be imported)
#   --budget       stop starting steps, and cut the running one, this many seconds after the
#                  start (GPU default 570: the device tool's command limit is 600 s), so that
#                  summary.txt is always written
# Environment: PY (default python3), OUT (default ./gpu_suite_out), BUILD_JOBS (default
# nproc - 2: two cores stay free for the timed steps that run during the build; their
# launch-bound figures, batch 1, may still read high: --only mask_speed,deploy_speed_tv
# reruns them on an idle machine).
#
# Preparing the wheels (the GPU machine has Python 3.12 + torch, no OpenMMLab, no network).
# Once, here, in the repository root (.whl/ is in .gitignore: never committed, so the device
# tool sends it only when `carry` names it):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
#     mmengine==0.10.7 mmdet==3.3.0 mmpretrain==1.2.0 pycocotools==2.0.10 setuptools==69.5.1 \
#     addict==2.4.0 yapf==0.43.0 platformdirs==4.14.9 termcolor==3.3.0 terminaltables==3.1.10 \
#     shapely==2.2.0 mat4py==0.6.0 modelindex==0.0.2 model-index==0.1.11 ordered-set==4.1.0 \
#     importlib-metadata==8.7.0 zipp==4.1.2
#   .venv/bin/python -m pip download --no-deps --no-build-isolation --no-binary=:all: -d .whl \
#     mmcv==2.1.0            # the sdist, mmcv-2.1.0.tar.gz (its CUDA ops are built there)
# (17 wheels, 8 MB, checked 12-03 to resolve for cp312 manylinux; the rest, e.g. matplotlib,
# scipy, einops, opencv-python-headless, are on the machine. setuptools 69: mmcv's setup.py
# needs pkg_resources, and setup.cfg requires setuptools<81.
# `unzip -p .whl/NAME-*.whl '*/METADATA' | grep ^Requires-Dist` lists a wheel's needs; keep one
# version of each.) Then one call of the device tool, e.g.
#   run(command="bash benchmarks/gpu_suite.sh", carry=[".whl"], timeout_s=600)
# The figures come back under files_at. Steps cut by the budget can be rerun alone:
#   run(command="bash benchmarks/gpu_suite.sh --only train_overhead,deploy_speed", carry=[".whl"])
set -u

DEVICE=cuda
ONLY=""
BUDGET=""
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        --budget) BUDGET="$2"; shift 2 ;;
        -h|--help) sed -n '2,60p' "$0"; exit 0 ;;
        *) echo "gpu_suite.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$DEVICE" in
    cuda|cpu) ;;
    *) echo "gpu_suite.sh: --device must be cuda or cpu, got $DEVICE" >&2; exit 2 ;;
esac

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 2
PY="${PY:-python3}"
OUT="${OUT:-$REPO/gpu_suite_out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SITE=/tmp/gpu_suite_site
BUILD_DIR=/tmp/gpu_suite_mmcv
export PYTHONUNBUFFERED=1
export PYTHONPATH="$REPO"
if [ "$DEVICE" = cpu ]; then
    BUDGET="${BUDGET:-0}"
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
else
    BUDGET="${BUDGET:-570}"
fi
START=$(date +%s)
SUMMARY="$OUT/summary.txt"
STEPS=()

wanted() {  # wanted STEP: whether --only (if given) names it
    [ -z "$ONLY" ] && return 0
    case ",$ONLY," in *",$1,"*) return 0 ;; esac
    return 1
}

write_summary() {
    {
        echo "gpu_suite.sh --device $DEVICE: $(date -u '+%F %T') UTC, $(( $(date +%s) - START )) s"
        for line in ${STEPS[@]+"${STEPS[@]}"}; do echo "$line"; done
    } > "$SUMMARY"
}

run_step() {  # run_step NAME FILE CMD...: append its output to $OUT/FILE.txt, record the result
    local name="$1" file="$OUT/$2.txt"
    shift 2
    wanted "$name" || return 0
    local now left begin rc
    now=$(date +%s)
    left=$(( BUDGET - (now - START) ))
    if [ "$BUDGET" -gt 0 ] && [ "$left" -le 5 ]; then
        STEPS+=("SKIPPED $name (budget of $BUDGET s spent)")
        write_summary
        return 0
    fi
    echo "===== $name: $* =====" | tee -a "$file"
    begin=$(date +%s)
    if [ "$BUDGET" -gt 0 ] && ! declare -F "$1" >/dev/null; then
        timeout --kill-after=5 "$left" "$@" 2>&1 | tee -a "$file"
        rc=${PIPESTATUS[0]}
    else
        "$@" 2>&1 | tee -a "$file"
        rc=${PIPESTATUS[0]}
    fi
    local took=$(( $(date +%s) - begin ))
    local status=PASSED
    [ "$rc" -ne 0 ] && status="FAILED (exit $rc)"
    [ "$rc" -eq 124 ] && status="CUT by the budget (exit 124)"
    echo "===== $name: $status in $took s =====" | tee -a "$file"
    STEPS+=("$status $name ($took s) -> $(basename "$file")")
    write_summary
}

env_info() {
    "$PY" - <<'EOF'
import platform
import torch
print(f'python {platform.python_version()}, torch {torch.__version__}, CUDA build '
      f'{torch.version.cuda}, CUDA available {torch.cuda.is_available()}')
if torch.cuda.is_available():
    print(f'GPU {torch.cuda.get_device_name()}, capability {torch.cuda.get_device_capability()}, '
          f'{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB')
    lt = getattr(torch.backends, 'cusparselt', None)
    print('cuSPARSELt:', lt.version() if lt is not None and lt.is_available() else 'not available')
for name in ('mmcv', 'mmengine', 'mmdet', 'mmpretrain'):
    try:
        module = __import__(name)
        print(f'{name} {module.__version__}')
    except ImportError as err:
        print(f'{name}: not importable ({err})')
EOF
    if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not found"; fi
}

install_wheels() {  # the carried pure-Python wheels into $SITE (GPU mode)
    if ! ls "$REPO"/.whl/*.whl >/dev/null 2>&1; then
        echo "no .whl/*.whl: using the OpenMMLab packages already installed, if any"
        return 0
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$REPO"/.whl/*.whl || return 1
    echo "installed into $SITE: $(ls "$REPO"/.whl/*.whl | wc -l) wheels"
}

mmcv_ops_ok() { "$PY" -c 'import mmcv, mmcv._ext' >/dev/null 2>&1; }

BUILD_PID=""
start_mmcv_build() {  # in the background: the torch-only steps run meanwhile
    if mmcv_ops_ok; then
        echo "mmcv with ops already importable: no build" > "$BUILD_DIR.log"
        return 0
    fi
    local sdist
    sdist=$(ls "$REPO"/.whl/mmcv-*.tar.gz 2>/dev/null | head -n 1)
    if [ -z "$sdist" ]; then
        echo "no .whl/mmcv-*.tar.gz: cannot build mmcv (see the header of this script)" \
            > "$BUILD_DIR.log"
        return 0
    fi
    local jobs="${BUILD_JOBS:-$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))}"
    (
        rm -rf "$BUILD_DIR" && mkdir -p "$BUILD_DIR" && tar -xzf "$sdist" -C "$BUILD_DIR" &&
        cd "$BUILD_DIR"/mmcv-* &&
        echo "building $(basename "$sdist") with MAX_JOBS=$jobs TORCH_CUDA_ARCH_LIST=9.0" &&
        MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS="$jobs" \
            "$PY" -m pip wheel -v --no-index --no-deps --no-build-isolation \
            -w "$BUILD_DIR/wheel" . &&
        "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" \
            "$BUILD_DIR"/wheel/mmcv-*.whl &&
        echo "mmcv built and installed into $SITE"
    ) > "$BUILD_DIR.log" 2>&1 &
    BUILD_PID=$!
}

wait_mmcv_build() {  # wait for the build; its log's last lines; fail when mmcv ops don't import
    if [ -n "$BUILD_PID" ]; then  # not our child here (a pipeline's subshell): poll
        while kill -0 "$BUILD_PID" 2>/dev/null; do
            if [ "$BUDGET" -gt 0 ] && [ $(( $(date +%s) - START )) -ge $(( BUDGET - 5 )) ]; then
                tail -n 40 "$BUILD_DIR.log"
                echo "mmcv build still running when the budget of $BUDGET s was spent"
                return 124
            fi
            sleep 5
        done
    fi
    if [ -f "$BUILD_DIR.log" ]; then
        tail -n 120 "$BUILD_DIR.log"
    else
        echo "no mmcv build here (the CPU dry run uses the environment's mmcv)"
    fi
    if mmcv_ops_ok; then
        "$PY" -c 'import mmcv; print("mmcv", mmcv.__version__, "with ops: importable")'
    else
        "$PY" -c 'import mmcv._ext' 2>&1 | tail -n 3
        return 1
    fi
}

needs_mmcv=0
for step in tests_cuda refresh_speed train_overhead train_overhead_graph deploy_speed; do
    wanted "$step" && needs_mmcv=1
done

if [ "$DEVICE" = cuda ]; then
    if ! "$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
        echo "gpu_suite.sh: no CUDA device here; run the dry run with --device cpu" >&2
        exit 2
    fi
    install_wheels 2>&1 | tee -a "$OUT/torch_only.txt"
    export PYTHONPATH="$REPO:$SITE"
    [ "$needs_mmcv" = 1 ] && start_mmcv_build
    run_step env torch_only env_info
    # Without the wheels on the path: PyTorch alone, whatever state the build is in.
    TORCH_ONLY=(env PYTHONPATH="$REPO" "$PY")
    run_step masks_tests torch_only "${TORCH_ONLY[@]}" -m pytest -m cuda -q -rs \
        tests/cuda/test_cuda_masks.py tests/cuda/test_semi_structured_cuda.py
    run_step mask_speed torch_only "${TORCH_ONLY[@]}" benchmarks/mask_speed.py --device cuda \
        --repeats 20
    run_step deploy_speed_tv torch_only "${TORCH_ONLY[@]}" benchmarks/deploy_speed.py \
        --device cuda --source torchvision
    if [ "$needs_mmcv" = 1 ]; then
        ONLY_SAVED="$ONLY"; ONLY=""
        run_step mmcv_build mmcv_build wait_mmcv_build
        ONLY="$ONLY_SAVED"
    fi
    # The figures with targets first, should the budget cut the last steps.
    run_step refresh_speed refresh_speed "$PY" benchmarks/refresh_speed.py --device cuda
    run_step train_overhead train_overhead "$PY" benchmarks/train_overhead.py --device cuda \
        --amp --height 800 --width 1333 --batch 2
    run_step tests_cuda tests_cuda "$PY" -m pytest -m cuda -q -rs tests/cuda
    run_step deploy_speed deploy_speed "$PY" benchmarks/deploy_speed.py --device cuda
    run_step train_overhead_graph train_overhead "$PY" benchmarks/train_overhead.py \
        --device cuda --amp --cuda-graph --height 800 --width 1333 --batch 2
else
    echo "CPU dry run: small sizes, dense paths only; no wheels installed, no mmcv build" |
        tee -a "$OUT/torch_only.txt"
    run_step env torch_only env_info
    run_step masks_tests torch_only "$PY" -m pytest -m cuda -q -rs -p no:cacheprovider \
        tests/cuda/test_cuda_masks.py tests/cuda/test_semi_structured_cuda.py
    run_step mask_speed torch_only "$PY" benchmarks/mask_speed.py --device cpu --repeats 1 \
        --skip-packed
    run_step deploy_speed_tv torch_only "$PY" benchmarks/deploy_speed.py --device cpu \
        --source torchvision
    run_step mmcv_build mmcv_build wait_mmcv_build
    run_step refresh_speed refresh_speed "$PY" benchmarks/refresh_speed.py --device cpu
    run_step train_overhead train_overhead "$PY" benchmarks/train_overhead.py --device cpu \
        --height 128 --width 128 --batch 1 --iters 1 --warmup 1
    run_step tests_cuda tests_cuda "$PY" -m pytest -m cuda -q -rs -p no:cacheprovider tests/cuda
    run_step deploy_speed deploy_speed "$PY" benchmarks/deploy_speed.py --device cpu
fi

write_summary
echo
cat "$SUMMARY"
grep -q '^FAILED\|^CUT\|^SKIPPED' "$SUMMARY" && exit 1
exit 0
