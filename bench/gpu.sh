#!/usr/bin/env bash
# The GPU figures in one prepared run of at most ~5 minutes, for a machine with a CUDA GPU:
#   1. `emo extract` clips/s (offline encoders on the GPU, MELD-like 720p clips)
#   2. `emo fit` training seconds per epoch on a MELD-sized cache, none vs a GRU context head
#   3. `emo ablate` vs the same grid as sequential `emo fit` + `emo eval` processes
# Each step is a bench/ script: interleaved rounds, medians with their spread, no figure when
# other work takes over half the cores (bench/_timing.py). A step that fails or is refused
# does not stop the others; the script exits non-zero if any did.
#
#   bench/gpu.sh          # on the GPU machine
#   bench/gpu.sh --cpu    # the same steps at small sizes on the CPU: checks the script; NOT GPU figures
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-.venv/bin/python}
status=0

if [[ "${1:-}" == "--cpu" ]]; then
    echo "bench/gpu.sh --cpu: a dry run on the CPU at small sizes; these are NOT GPU figures."
    extract=(--device cpu --clips 4 --repeats 1 --workers 1 --allow-load)
    fit=(--device cpu --train 1000 --dev 200 --epochs 1 --repeats 1 --allow-load)
    ablate=(--device cpu --small --seeds 1 --epochs 1 --repeats 1 --allow-load)
elif "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    "$PY" -c 'import torch; print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__)'
    workers=$(($(nproc) > 9 ? 8 : $(nproc) - 1))
    extract=(--device cuda --clips 16 --repeats 2 --workers "$workers")
    fit=(--device cuda --epochs 2 --repeats 2)
    ablate=(--device cuda --small --seeds 1 --epochs 1 --repeats 1)
else
    echo "bench/gpu.sh: no CUDA GPU is present here (torch.cuda.is_available() is False), so no GPU figure" \
        "was measured. Run it on the GPU machine, or with --cpu to try the steps on the CPU."
    exit 2
fi

step() {  # step SECONDS TITLE COMMAND...: run one bench under a time limit, keep going on failure
    local limit=$1 title=$2
    shift 2
    echo
    echo "== $title (at most ${limit} s)"
    timeout "$limit" "$@"
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        echo "== $title: exit $rc$([[ $rc -eq 124 ]] && echo ' (time limit)')$([[ $rc -eq 3 ]] && echo ' (not measured: load)')"
        status=1
    fi
}

started=$SECONDS
step 90 "extraction clips/s (pipeline alone)" "$PY" bench/extract.py --full-only --out /tmp/emo-gpu-extract "${extract[@]}"
step 120 "fit training s/epoch, none vs GRU context" \
    "$PY" bench/fit.py --context-models none,gru --skip-encoders --skip-mel "${fit[@]}"
step 90 "ablation grid vs sequential fits" "$PY" bench/ablate.py "${ablate[@]}"
echo
echo "bench/gpu.sh: done in $((SECONDS - started)) s"
exit $status
