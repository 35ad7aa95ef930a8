#!/usr/bin/env bash
# Issue 30's measurements in one prepared run on a lent GPU (the device tool), after `python benchmarks/gpu_wheels.py` here:
#     run(command="bash benchmarks/gpu_device.sh", carry=[".whl"], timeout_s=590)
#     run(command="FROM=uncapped bash benchmarks/gpu_device.sh", carry=[".whl"], timeout_s=...)   # the rest, if time is left
# Each step is its own process under its own time limit, in the order the issue asks for them: a crash or a hang costs
# that step only. python -m benchmarks.gpu rewrites the result file after every measurement; it lives beside the saved model
# (kept while the machine stays warm, so a second call adds to it) and is copied to $OUT after every step.
# BUDGET_S (default 540) bounds one call; a step that would start too late is skipped and says so.
# Rehearsed on CPU by tests/benchmarks/test_gpu_bench.py: PYTHON=.venv/bin/python WHEELS=none GPU_BENCH_ARGS=--tiny.
set -u
out=${OUT:-/tmp/gpu-bench-out}
py=${PYTHON:-python3}
cache=${MODEL_CACHE:-/tmp/gpu-bench}
mkdir -p "$out" "$cache"
log="$out/log.txt"
start=$(date +%s)
deadline=$(( start + ${BUDGET_S:-540} ))
from=${FROM:-}

[ "${WHEELS:-.whl}" = none ] || "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${WHEELS:-.whl}"/*.whl >"$out/pip.txt" 2>&1 \
  || { echo "installing the carried wheels failed:"; tail -20 "$out/pip.txt"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$py" -c 'import sys, torch, transformers, peft, accelerate, bitsandbytes as bnb
print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__,
      "peft", peft.__version__, "accelerate", accelerate.__version__, "bitsandbytes", bnb.__version__)'
} 2>&1 | tee "$out/env.txt"

step() {  # step NAME LIMIT_S ARGS...: python -m benchmarks.gpu ARGS under min(LIMIT_S, what is left of the budget)
  local name=$1 limit=$2 left
  shift 2
  if [ -n "$from" ] && [ "$name" != "$from" ] && [ "$name" != prepare ]; then echo "== $name: before $from, not run" | tee -a "$log"; return; fi
  [ "$name" = "$from" ] && from=""
  left=$(( deadline - $(date +%s) ))
  if [ "$left" -lt 20 ]; then echo "== $name: skipped, out of time (FROM=$name runs it next)" | tee -a "$log"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name: $* (${limit}s)" | tee -a "$log"
  # --deadline a little inside the kill: the benchmark records a time-out itself rather than being killed mid-row
  # shellcheck disable=SC2086  # GPU_BENCH_ARGS is a list of words
  timeout -k 5 "$limit" "$py" -m benchmarks.gpu --model-cache "$cache" --out "$cache/gpu.json" \
    --deadline $(( $(date +%s) + limit - 8 )) --setup-timeout "$limit" ${GPU_BENCH_ARGS:-} "$@" 2>&1 \
    | grep --line-buffered -v 'Loading weights\|Writing model shards' | tee -a "$log"
  echo "== $name: exit ${PIPESTATUS[0]} at $(( $(date +%s) - start ))s" | tee -a "$log"
  [ -f "$cache/gpu.json" ] && cp "$cache/gpu.json" "$out/gpu.json"
}

step prepare 70 --sections prepare                                   # the random 7B, saved once for every later step
step train 170 --sections train --only "lab:,shipped" --cap on        # the targets: faithful lab vs the shipped recipe, L4 memory
step alternatives 150 --sections train --only "no checkpointing,micro-batch 64,bf16" --cap on
step serve 75 --sections serve                                       # the engine at 7B: concurrency 1/8/32, batched vs 1
step generation 60 --sections generation                             # the kit's evaluation: 200 rows x 100 tokens
step merge 60 --sections merge                                       # merge + save of a 7B
step resume 40 --sections resume                                     # interrupted + resumed == uninterrupted, dropout on
step uncapped 130 --sections train --only "lab:,shipped" --cap off    # the same two with the whole GPU
step kit 100 --sections kit                                          # the kit's own job on the GPU (4-bit), then its model served
step profile 45 --sections profile                                   # where the shipped recipe's step spends its time
ls -la "$out"
