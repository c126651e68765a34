#!/usr/bin/env bash
# The GPU checks of the open issues, in three parts that each fit one lent-machine command (at
# most 8.5 minutes on an H100/H200, the wheel install included; see BUDGET below).
#
# How to run it (next session): fetch the wheels once, here, with
#   bash ../shared/scripts/device-wheels.sh        # -> .whl/ (git-ignored)
# (in a git worktree, where .git is a file, that script stops at `.git/info/exclude`: add /.whl/ to
# the file `git rev-parse --git-path info/exclude` names, then run its `pip download` line.)
# then one device call per part (check `status` first: budget_left_s must cover ~540 s plus the
# machine's start-up; a session's 15 minutes of device time hold ONE part, so part1 in one session
# and part2 in the next, unless more time is left):
#   run(command="bash benchmarks/gpu_session.sh part1", carry=[".whl"], timeout_s=540)
#   run(command="bash benchmarks/gpu_session.sh part2", carry=[".whl"], timeout_s=540)
#   run(command="bash benchmarks/gpu_session.sh part3", carry=[".whl"], timeout_s=540)
# (part3 needs torchao and bitsandbytes among the wheels:
#   bash ../shared/scripts/device-wheels.sh torchao==0.18.0 bitsandbytes==0.50.2)
# and give_back right after. Everything comes back from $OUT (at most 8 files, under files_at):
# copy them into benchmarks/results/ and commit them raw; a non-zero rc names the failed steps in
# the last line of the output and in the session file. Without OUT the files go to
# benchmarks/results/.
#   part1: search_cost on builtin:sd15 512x512 without compile (per-trial overhead and phases,
#          whether the warm worker was reused, the spread of one assignment over 5 trials), then
#          the 8GB search under a time budget with the hand choice (fp16 + SDPA, + model offload
#          where fp16 weights x1.5 do not fit) measured inside that budget, and profile / hand.
#   part2: the seed ladder (fp32 -> fp16 -> channels_last -> compile), the 4GB search with its
#          hand choice, and, if the 4GB winner compiles, `autotune warmup` (first call cold vs
#          with the artifacts).
#   part3 (issue 22): builtin:sdxl 1024x1024 at 8GB with torchao's and bitsandbytes'
#          quantization included, against the hand choice (fp16 + model offload there); then
#          builtin:sd15 at 8GB with compile limited to CUDA graphs (the other modes excluded),
#          against the hand choice (fp16), in the same run.
# Each part starts with benchmarks/preflight.py (imports, NVML by PID, one sd15 step, one tiny
# compile; stops in seconds on failure). Every step writes its results as it goes and has its own
# `timeout`; a failed step does not stop the later ones, but the script then exits 1. The session
# file <date>-<device>-<part>-session.md names the card (nvidia-smi csv), the versions and how each
# step ended; trial logs are packed into <date>-<device>-<part>-logs.tgz after every step (no
# inductor caches, no reference images). One inductor cache is shared by the part's steps.
#
# Dress rehearsal on CPU (CI's slow tier runs it, tests/test_gpu_session.py):
#   AUTOTUNE_REHEARSAL=1 OUT=/tmp/o bash benchmarks/gpu_session.sh part1
# the same steps on builtin:tiny-sd, --device cpu, 64 px, 2 steps, few trials; no wheel install,
# no nvidia-smi. AUTOTUNE_SESSION_FAIL=<step> makes that step fail (to test the exit status);
# AUTOTUNE_SESSION_MODEL overrides the model; PYTHON the interpreter (default python3). The
# rehearsal's timeouts and inner budgets are AUTOTUNE_REHEARSAL_SLACK (default 3) times the GPU's.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

# BUDGET, seconds per step (each is that step's `timeout`); the sum must stay <= 510 (8.5 min).
#   part1: install 30 + preflight 60 + search_cost 170 + search_8gb 210 + pack 10        = 480
#   part2: install 30 + preflight 60 + ladder 130 + search_4gb 140 + warmup 130 + pack 10 = 500
#   part3: install 30 + preflight 60 + quant_sdxl_8gb 240 + graphs_8gb 170 + pack 10      = 510
# The Python steps get inner budgets 10-20 s under their timeout, to write their files and end.
# Why these sizes (H100 run of 2026-11-27): a trial without compile is ~20-35 s in a fresh worker
# (weights 12-25 s), a few s in a warm one; a cold compile=full is 52-78 s; warmup is a cold
# compile in a fresh process (~95 s) plus a process that loads the artifacts (~25 s).
T_INSTALL=30 T_PREFLIGHT=60 T_SEARCH_COST=170 T_SEARCH_8GB=210 T_LADDER=130 T_SEARCH_4GB=140 T_WARMUP=130 T_PACK=10
T_QUANT=240 T_GRAPHS=170
LIMIT=510

part=${1:-}
case "$part" in
    part1) budget=$((T_INSTALL + T_PREFLIGHT + T_SEARCH_COST + T_SEARCH_8GB + T_PACK)) ;;
    part2) budget=$((T_INSTALL + T_PREFLIGHT + T_LADDER + T_SEARCH_4GB + T_WARMUP + T_PACK)) ;;
    part3) budget=$((T_INSTALL + T_PREFLIGHT + T_QUANT + T_GRAPHS + T_PACK)) ;;
    *) echo "usage: bash benchmarks/gpu_session.sh part1|part2|part3" >&2; exit 2 ;;
esac
if [ "$budget" -gt "$LIMIT" ]; then echo "budget of $part is $budget s, over $LIMIT s" >&2; exit 2; fi

rehearsal=${AUTOTUNE_REHEARSAL:-0}
slack=1  # the rehearsal's timeouts and budgets are this many times the GPU's: a shared CPU is slower
[ "$rehearsal" = 1 ] && slack=${AUTOTUNE_REHEARSAL_SLACK:-3}
within() { echo $((($1) * slack)); }  # an inner budget, scaled like the timeouts
out=${OUT:-benchmarks/results}
run=${AUTOTUNE_SESSION_RUN_DIR:-/tmp/gpu-session-$part}
py=${PYTHON:-python3}
rm -rf "$run" && mkdir -p "$run/logs" "$out" || exit 1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TORCHINDUCTOR_CACHE_DIR="$run/inductor-cache"
if [ "$rehearsal" = 1 ]; then
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    device=cpu model=${AUTOTUNE_SESSION_MODEL:-builtin:tiny-sd}
    size=(--height 64 --width 64) steps=2
    cost_args=(--trials 2 --repeat 2 --max-run-time 1)
    check_args=(--smoke) ladder_args=(--smoke)
    # the same steps without what cannot run on a CPU (bitsandbytes, CUDA graphs)
    sdxl_model=$model sdxl_size=("${size[@]}") quant_args=() graphs_args=()
    device_name=$("$py" -c 'from autotune.hardware import cpu_name; print(cpu_name())' 2>/dev/null || echo cpu)
else
    export PYTHONPATH="/tmp/site:$PWD"
    device=cuda model=${AUTOTUNE_SESSION_MODEL:-builtin:sd15}
    size=(--height 512 --width 512) steps=20
    cost_args=(--trials 6 --repeat 5 --max-run-time 6)
    check_args=(--max-run-time 5 --trial-timeout 100)
    ladder_args=(--max-run-time 3 --ladder-timeout 100)  # short runs: the compile row must fit
    sdxl_model=builtin:sdxl sdxl_size=(--height 1024 --width 1024)
    quant_args=(--include quantize --include quantize_bnb --exclude compile --trials 5)
    graphs_args=(--exclude compile=full --exclude compile=full-max-autotune --exclude compile=regional --trials 3)
    device_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
fi
slug=$(printf '%s' "${device_name:-unknown device}" | tr 'A-Z' 'a-z' | sed -E 's/\((r|tm)\)//g; s/[^a-z0-9]+/-/g; s/^-+|-+$//g')
stem="$(date -u +%F)-$slug"
session="$out/$stem-$part-session.md"
failed=()

pack() {  # the trial logs so far, without caches: rewritten after every step
    tar czf "$out/$stem-$part-logs.tgz" -C "$run" --exclude='inductor-cache' --exclude='references' \
        --exclude='*.compile.bin' --exclude='torchinductor*' --exclude='*.safetensors' --exclude='*.pt' . 2>/dev/null
}

step() {  # step NAME TIMEOUT COMMAND...: run it under its timeout, log it, record how it ended
    local name=$1 limit=$2 t0=$SECONDS rc verdict
    shift 2
    if [ "${AUTOTUNE_SESSION_FAIL:-}" = "$name" ]; then
        set -- bash -c 'echo "failure injected by AUTOTUNE_SESSION_FAIL" >&2; exit 3'
    fi
    echo "== $name (timeout $limit s): $*" | tee -a "$run/logs/$name.log"
    timeout --kill-after=5 $((limit * slack)) "$@" 2>&1 | tee -a "$run/logs/$name.log"
    rc=${PIPESTATUS[0]}
    case "$rc" in
        0) verdict="ok" ;;
        124|137) verdict="**FAILED**: timed out (exit $rc)" ;;
        *) verdict="**FAILED** (exit $rc)" ;;
    esac
    echo "- $name: $verdict in $((SECONDS - t0)) s of its $limit s$([ "$slack" = 1 ] || echo " (x$slack in rehearsal)")" >> "$session"
    [ "$rc" = 0 ] || failed+=("$name")
    pack
    return "$rc"
}

finish() {
    echo "" >> "$session"
    if [ "${#failed[@]}" -gt 0 ]; then
        echo "**$part FAILED** in $SECONDS s (budget $budget s): ${failed[*]}" | tee -a "$session"
        pack
        exit 1
    fi
    echo "$part passed in $SECONDS s (budget $budget s)" | tee -a "$session"
    pack
    exit 0
}

{
    echo "# GPU session $part: $device_name, $(date -u +%F)"
    echo ""
    echo "- command: \`bash benchmarks/gpu_session.sh $part\`$([ "$rehearsal" = 1 ] && echo " (CPU dress rehearsal, AUTOTUNE_REHEARSAL=1)")"
    echo "- started $(date -u +%FT%TZ); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); model $model, device $device"
    echo "- budget: $budget s of $LIMIT s (install $T_INSTALL, preflight $T_PREFLIGHT, then the steps below)"
    echo "- one inductor cache for all of this part's steps (a later step may find an earlier one's compile)"
} > "$session"

if [ "$rehearsal" = 1 ]; then
    echo "- device: CPU, $device_name, $(nproc) cores (rehearsal: no wheel install, no nvidia-smi)" >> "$session"
else
    step install "$T_INSTALL" python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl || finish
    {
        echo ""
        echo '```csv'
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,pstate --format=csv 2>&1
        echo '```'
    } >> "$session"
fi
# The versions from the package metadata (no import): written even if the imports fail below.
"$py" - >> "$session" 2>&1 <<'EOF'
from importlib.metadata import PackageNotFoundError, version
import platform
def v(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"
print("- versions: python " + platform.python_version() + ", "
      + ", ".join(f"{d} {v(d)}" for d in ("torch", "diffusers", "optuna", "transformers", "accelerate", "nvidia-ml-py")))
EOF
echo "" >> "$session"
echo "## Steps" >> "$session"
echo "" >> "$session"

step preflight "$T_PREFLIGHT" "$py" benchmarks/preflight.py --device "$device" --model "$model" "${size[@]}" \
    --timeout "$(within T_PREFLIGHT-10)" --report "$run/preflight.md" --log-dir "$run/preflight-logs"
preflight_rc=$?
[ -f "$run/preflight.md" ] && cat "$run/preflight.md" >> "$session" && echo "" >> "$session"
[ "$preflight_rc" = 0 ] || finish

common=(--device "$device" --model "$model" "${size[@]}" --steps "$steps" --out-dir "$out")
if [ "$part" = part1 ]; then
    step search_cost "$T_SEARCH_COST" "$py" benchmarks/search_cost.py "${common[@]}" "${cost_args[@]}" \
        --no-regret --exclude compile --time-budget "$(within 90)" --budget-s "$(within T_SEARCH_COST-15)" --run-dir "$run/search-cost"
    step search_8gb "$T_SEARCH_8GB" "$py" benchmarks/gpu_check.py "${common[@]}" "${check_args[@]}" \
        --no-ladder --no-preflight --ceilings 8GB --tag part1 --budget-s "$(within T_SEARCH_8GB-20)" --run-dir "$run/gpu-check"
elif [ "$part" = part3 ]; then
    step quant_sdxl_8gb "$T_QUANT" "$py" benchmarks/gpu_check.py --device "$device" --model "$sdxl_model" \
        "${sdxl_size[@]}" --steps "$steps" --out-dir "$out" "${check_args[@]}" "${quant_args[@]}" \
        --no-ladder --no-preflight --ceilings 8GB --tag part3-quant --budget-s "$(within T_QUANT-20)" --run-dir "$run/quant"
    step graphs_8gb "$T_GRAPHS" "$py" benchmarks/gpu_check.py "${common[@]}" "${check_args[@]}" "${graphs_args[@]}" \
        --no-ladder --no-preflight --ceilings 8GB --tag part3-graphs --budget-s "$(within T_GRAPHS-15)" --run-dir "$run/graphs"
else
    step ladder "$T_LADDER" "$py" benchmarks/gpu_check.py "${common[@]}" "${ladder_args[@]}" \
        --ceilings --no-preflight --tag part2-ladder --budget-s "$(within T_LADDER-10)" --run-dir "$run/gpu-check-ladder"
    step search_4gb "$T_SEARCH_4GB" "$py" benchmarks/gpu_check.py "${common[@]}" "${check_args[@]}" \
        --no-ladder --no-preflight --ceilings 4GB --tag part2 --budget-s "$(within T_SEARCH_4GB-15)" --run-dir "$run/gpu-check"
    profile=$(ls "$out"/*-part2-4gb.yaml 2>/dev/null | head -1)
    compiles=$([ -n "$profile" ] && "$py" -c 'import sys; from autotune.profiles.profile import Profile
print(Profile.load(sys.argv[1]).best.settings.get("compile", "none"))' "$profile" 2>/dev/null)
    if [ -n "$profile" ] && [ "${compiles:-none}" != none ]; then
        # On a copy: warmup writes PROFILE.compile.bin beside the profile (not one of the 8 files).
        mkdir -p "$run/warmup" && cp "$profile" "$run/warmup/profile.yaml"
        step warmup "$T_WARMUP" "$py" -m autotune.cli.main warmup "$run/warmup/profile.yaml" \
            --timeout "$(within T_WARMUP-10)" --json
        # Whatever the exit: warmup saves the cold first call in the profile before its second process.
        cp "$run/warmup/profile.yaml" "$profile"
    else
        echo "- warmup: skipped, the 4GB search's winner does not compile (${profile:-no profile})" >> "$session"
    fi
fi
finish
