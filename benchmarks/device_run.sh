#!/usr/bin/env bash
# What the lent GPU machine runs: install the carried wheels (diffusers, optuna and their needs;
# ../shared/scripts/device-wheels.sh fetches them into .whl/), record the card, then run one
# benchmark into $OUT. Usage there:
#   bash benchmarks/device_run.sh gpu_check.py [args]
#   bash benchmarks/device_run.sh planner_accuracy.py --device cuda [args]
# For the whole GPU session of the open issues, in two loans, see benchmarks/gpu_session.sh.
set -uo pipefail
script=${1:?usage: device_run.sh SCRIPT.py [args]}; shift
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
out=${OUT:-benchmarks/results}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia-smi.csv" 2>&1
python3 -c "import torch, diffusers, optuna; print(torch.__version__, diffusers.__version__, optuna.__version__, torch.cuda.get_device_name(0))"
extra=()
[ "$script" = gpu_check.py ] && extra=(--run-dir /tmp/gpu-check-run)
python3 "benchmarks/$script" --out-dir "$out" "${extra[@]}" "$@" 2>&1 | tee "$out/${script%.py}.log"
rc=${PIPESTATUS[0]}
[ -d /tmp/gpu-check-run ] && tar czf "$out/trial-logs.tgz" -C /tmp/gpu-check-run --exclude='inductor-cache' \
    --exclude='references' --exclude='*.compile.bin' .
exit "$rc"
