#!/usr/bin/env bash
# What the lent GPU machine runs (see README "GPU check"): install the carried wheels (diffusers,
# optuna and their needs; ../shared/scripts/device-wheels.sh fetches them into .whl/), record the
# card, then run the GPU check into $OUT. Usage there: bash benchmarks/device_run.sh [gpu_check args]
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
out=${OUT:-benchmarks/results}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia-smi.csv" 2>&1
python3 -c "import torch, diffusers, optuna; print(torch.__version__, diffusers.__version__, optuna.__version__, torch.cuda.get_device_name(0))"
python3 benchmarks/gpu_check.py --out-dir "$out" --run-dir /tmp/gpu-check-run "$@" 2>&1 | tee "$out/gpu_check.log"
rc=${PIPESTATUS[0]}
tar czf "$out/trial-logs.tgz" -C /tmp/gpu-check-run . 2>/dev/null
exit "$rc"
