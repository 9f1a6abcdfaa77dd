#!/usr/bin/env bash
# GPU benchmarks in one command, on a machine that has torch and transformers but no virtualenv
# (e.g. an NVIDIA H200 with torch 2.11, transformers 5.17, Python 3.12):
#
#   bash bench/gpu/run.sh
#
# 1. installs the wheels in .whl/ (bench/gpu/wheels.sh fetches them on a machine with pip access)
#    into /tmp/site;
# 2. builds Llama-shaped models with seeded random weights (bench.gpu.models, no hub);
# 3. per size and dtype: bench.pipeline, 3 stages in 3 processes on the one GPU vs monolithic generate;
# 4. per size: bench.concurrency, SESSIONS sessions batched by every stage vs monolithic batched generate;
# 5. with PROFILE=1, per size: bench.hopprofile (one untimed warm-up run per level first), where each millisecond of a decode step goes at each stage
#    at 1 and SESSIONS sessions;
# and writes the result files (with provenance: commit, machine, command, load) and a log under $OUT
# (at most 8 files: 4 pipeline + 2 concurrency + the log; PROFILE=1 adds 2 hopprofile files).
#
# Settings (environment, defaults in brackets): SIZES [1b,3b], DTYPES [float32,bfloat16],
# CONC_DTYPE [bfloat16], TOKENS [64], CONC_TOKENS [32], SESSIONS [16], REPEATS [3], DEVICE [cuda], PROFILE [0],
# OUT [$OUT, else bench/results], MODELS [/tmp/tessera-gpu-models], STEP_TIMEOUT [180 s per benchmark],
# WINDOW_MS [5: the workers' batch window; with 2 the scheduler's cap, 10 windows, split 16 sessions into groups],
# PIPELINE [1; 0 leaves out the pipeline benchmark], MAX_BATCH [64: sessions in one forward at most; fewer
# keep several groups in the ring at once], TAG [none; names the result files ...-TAG.json].
set -uo pipefail
cd "$(dirname "$0")/../.."
SIZES=${SIZES:-1b,3b} DTYPES=${DTYPES:-float32,bfloat16} CONC_DTYPE=${CONC_DTYPE:-bfloat16}
TOKENS=${TOKENS:-64} CONC_TOKENS=${CONC_TOKENS:-32} SESSIONS=${SESSIONS:-16} REPEATS=${REPEATS:-3}
DEVICE=${DEVICE:-cuda} PROFILE=${PROFILE:-0} OUT=${OUT:-bench/results} MODELS=${MODELS:-/tmp/tessera-gpu-models}
STEP_TIMEOUT=${STEP_TIMEOUT:-180} WINDOW_MS=${WINDOW_MS:-5} PIPELINE=${PIPELINE:-1} MAX_BATCH=${MAX_BATCH:-64}
TAG=${TAG:+-$TAG}
mkdir -p "$OUT"
LOG="$OUT/gpu-run.log"
started=$(date +%s)
say() { echo "[$(( $(date +%s) - started ))s] $*" | tee -a "$LOG" >&2; }

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >>"$LOG" 2>&1 || { say "installing .whl/*.whl failed; see $LOG"; exit 1; }
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
export TESSERA_HOME=/tmp/tessera-home PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
card=$(python3 -c "import re, torch; print(re.sub('[^a-z0-9]+', '-', torch.cuda.get_device_name().lower()).strip('-')
                   if torch.cuda.is_available() else 'cpu')") || { say "python3 cannot import torch"; exit 1; }
say "device $card; sizes $SIZES; dtypes $DTYPES; results in $OUT; commit $(git rev-parse --short HEAD 2>/dev/null)"
python3 -m bench.gpu.models --sizes "$SIZES" --out "$MODELS" --device "$DEVICE" >>"$LOG" 2>&1 \
  || { say "building the models failed; see $LOG"; exit 1; }
say "models ready"

short() { case "$1" in float32) echo fp32;; bfloat16) echo bf16;; float16) echo fp16;; *) echo "$1";; esac; }
failed=0
for size in ${SIZES//,/ }; do
  for dtype in ${DTYPES//,/ }; do
    [ "$PIPELINE" = 1 ] || continue
    out="$OUT/pipeline-gpu-$card-$size-$(short "$dtype").json"
    timeout "$STEP_TIMEOUT" python3 -m bench.pipeline --model "$MODELS/llama-$size" --device "$DEVICE" --dtype "$dtype" \
      --stages 3 --tokens "$TOKENS" --repeats "$REPEATS" --prompt-ids 128000,791,6864,315,9822,374,12366,13,9842,264 \
      --json --save "$out" >/dev/null 2>>"$LOG" && say "wrote $out" || { say "pipeline $size $dtype failed"; failed=1; }
  done
  out="$OUT/concurrency-gpu-$card-$size-$(short "$CONC_DTYPE")$TAG.json"
  timeout "$STEP_TIMEOUT" python3 -m bench.concurrency --model "$MODELS/llama-$size" --device "$DEVICE" \
    --dtype "$CONC_DTYPE" --sessions "1,$SESSIONS" --unbatched "" --tokens "$CONC_TOKENS" --repeats "$REPEATS" \
    --window-ms "$WINDOW_MS" --max-batch "$MAX_BATCH" --json --save "$out" >/dev/null 2>>"$LOG" && say "wrote $out" || { say "concurrency $size failed"; failed=1; }
  if [ "$PROFILE" = 1 ]; then
    out="$OUT/hopprofile-gpu-$card-$size-$(short "$CONC_DTYPE")$TAG.json"
    timeout "$STEP_TIMEOUT" python3 -m bench.hopprofile --model "$MODELS/llama-$size" --device "$DEVICE" \
      --dtype "$CONC_DTYPE" --sessions "1,$SESSIONS" --tokens "$CONC_TOKENS" --repeats "$REPEATS" --window-ms "$WINDOW_MS" \
      --max-batch "$MAX_BATCH" \
      --json --save "$out" >/dev/null 2>>"$LOG" && say "wrote $out" || { say "hopprofile $size failed"; failed=1; }
  fi
done
say "done"
exit $failed
