#!/usr/bin/env bash
# The ONE script a session with a lent GPU runs for issue 11: the smoke test, then the side-by-side
# benchmark for LoRA and for full fine-tuning (llama-1b shape, random init, >= 60 steps per arm).
# Each part has a timeout (all together < 10 min) so a hang cannot eat the device time; every log is
# teed to $OUT (./device-logs when OUT is unset), with one summary.txt of exit codes and ratios.
#
#     bash benchmarks/device_run.sh         # training: smoke test + both benchmark arms
#     bash benchmarks/device_run.sh eval    # evaluation: benchmarks/gpu_eval_smoke.py (flex scoring, generation)
#
# QLoRA needs bitsandbytes: wheels found in .whl/ are installed first into /tmp/site (no network).
# Without CUDA the same script checks its own plumbing on CPU with the tiny model (seconds).
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/device-logs}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" TUNELAB_QUIET=1 TUNELAB_NO_ENERGY=1
PY="${PYTHON:-python3}"
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

part() {  # part NAME SECONDS COMMAND...: run with a timeout, tee its log, record its exit code
    local name=$1 limit=$2
    shift 2
    echo "== $name (timeout ${limit}s): $*" | tee -a "$OUT/summary.txt"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    echo "== $name exit ${PIPESTATUS[0]}" | tee -a "$OUT/summary.txt"
    grep -h "ratios\|^tunelab:\|FAIL\|^OK" "$OUT/$name.log" >> "$OUT/summary.txt" || true
}

if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    BENCH=(--device cuda --model-config llama-1b --gpu-steps 60)
    SMOKE=150; ARM=210
else
    echo "no CUDA: checking this script's plumbing on CPU with the tiny model" | tee -a "$OUT/summary.txt"
    BENCH=(--device cpu --model-config tiny --gpu-steps 3 --gpu-rows 16 --min-len 8 --max-len 64)
    SMOKE=60; ARM=180
fi
"$PY" -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__,
'peft', peft.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" 2>&1 | tee "$OUT/env.txt"

if [ "${1:-train}" = eval ]; then  # evaluation on the device: its own call (the training parts fill one)
    if [ "${BENCH[1]}" = cuda ]; then
        part eval-smoke 240 "$PY" benchmarks/gpu_eval_smoke.py
    else
        part eval-smoke 60 "$PY" benchmarks/gpu_eval_smoke.py --device cpu --items 3
    fi
    cat "$OUT/summary.txt"
    exit 0
fi
part smoke "$SMOKE" "$PY" benchmarks/gpu_smoke.py
part bench-lora "$ARM" "$PY" benchmarks/train_throughput.py "${BENCH[@]}" --method lora
part bench-full "$ARM" "$PY" benchmarks/train_throughput.py "${BENCH[@]}" --method full
cat "$OUT/summary.txt"
