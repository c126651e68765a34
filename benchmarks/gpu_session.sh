#!/usr/bin/env bash
# Every GPU check the open issues ask for, in one run on a lent GPU machine (about 11 minutes,
# within a 15-minute loan with start-up). Run on the machine, from the repository root, with the
# wheels `../shared/scripts/device-wheels.sh` fetched into .whl/:
#   OUT=benchmarks/results bash benchmarks/gpu_session.sh
# 1. search_cost on builtin:sd15 512x512: per-trial overhead and phases, spread of one
#    assignment over 5 trials (issue 9), no regret searches (too long for one loan);
# 2. gpu_check: the seed ladder, then searches at 4GB and 8GB with --time-budget, each with the
#    hand choice measured in the same run and the profile / hand ratio (issue 9);
# 3. warmup of the compiled profile, if a search picked compile: first call cold vs with the
#    artifacts (issue 14).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
out=${OUT:-benchmarks/results}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv > "$out/nvidia-smi.csv" 2>&1
python3 -c "import torch, diffusers, optuna; print(torch.__version__, diffusers.__version__, optuna.__version__, torch.cuda.get_device_name(0))"

timeout 240 python3 benchmarks/search_cost.py --model builtin:sd15 --device cuda --height 512 --width 512 \
    --steps 20 --trials 6 --no-regret --repeat 5 --out-dir "$out" --run-dir /tmp/search-cost 2>&1 | tee "$out/search_cost.log"
timeout 420 python3 benchmarks/gpu_check.py --out-dir "$out" --run-dir /tmp/gpu-check-run --budget-s 400 \
    --trial-timeout 150 --ladder-timeout 200 2>&1 | tee "$out/gpu_check.log"
for profile in "$out"/*-4gb.yaml "$out"/*-8gb.yaml; do
    [ -f "$profile" ] || continue
    if grep -q "compile: full\|compile: regional" "$profile"; then
        timeout 200 python3 -m autotune.cli.main warmup "$profile" --timeout 180 2>&1 | tee -a "$out/warmup.log"
        break
    fi
done
tar czf "$out/trial-logs.tgz" -C /tmp gpu-check-run search-cost 2>/dev/null
exit 0
