#!/usr/bin/env bash
# False penalties of CPU vs GPU honest replicas (issue 15) on a GPU machine reached through the device
# tool, whose calls carry at most 64 MiB: the real SmolLM2-135M weights travel as the packaged GGUF, xz
# compressed and split over consecutive calls, and are converted there as the installer converts them.
#
# Here, once per change of code (it stages the branch's HEAD: commit first):
#
#   bash bench/gpu/split.sh     # fills <main checkout>/.gpucarry/{1,2,...}; prints the calls below
#
# Then, back to back (a device machine stays warm 30 s after a call; what earlier calls left in /tmp
# goes with it, so a gap means starting again at call 1), from the main checkout:
#
#   call 1:   carry [.gpucarry/1]  command  bash .gpucarry/1/code/bench/gpu/verify.sh
#   call k:   carry [.gpucarry/k]  command  bash /tmp/gv/code/bench/gpu/verify.sh      (k = 2..N)
#
# Every call stashes what it carries in /tmp/gv (code, wheels, the model's small files, GGUF parts);
# the call that completes the parts then:
#   1. joins and decompresses the GGUF and checks its sha256 (GGUF_SHA256 below);
#   2. installs the wheels into /tmp/site (transformers 5.23, eth-account and its needs, gguf);
#   3. converts it with worker.store.install.convert_smollm2 (bench.gpu.smollm2) into
#      /tmp/gv/home/models/smollm2-135m and checks the weights against the local store's (MODEL_SHA256, or
#      TENSORS_SHA256 where only the safetensors header differs), failing loudly otherwise; the store's
#      manifest, int8 outlier features, tokenizer and config are copied in;
#   4. runs `python3 -m bench.verify --honest-only --device "$DEVICE" --mixes $MIXES` first on SMOKE prompts
#      (stopping on a failure), then on PROMPTS prompts, in JOBS processes, writing
#      $OUT/verify-gpu-<card>-smoke.json, $OUT/verify-gpu-<card>.json and the log $OUT/verify-gpu.log.
# Seen 2026-12-02 (commit 743a04b): call 1 0.4 s after the machine's start, call 2 203 s (join 9 s, wheels
# 3 s, conversion 41 s, smoke 49 s, 50 prompts 95 s); 313 s of device time in all, given back at once.
# A later call with no carry (`bash /tmp/gv/code/bench/gpu/verify.sh`) on the same warm machine reruns
# step 4 alone (SMOKE=0 skips the smoke run).
#
# Settings (environment, defaults in brackets): MIXES [fp32-3hop,fp32-cuda-3hop,bf16-cuda-3hop],
# PROMPTS [50], SMOKE [2], TOLERANCES [code], JOBS [15 processes, each running one mix on a run of
# prompts], DEADLINE [560 s after the start, for both runs], OUT [$OUT, else $GV/out], GV [/tmp/gv: the
# stash], SITE [/tmp/site: the wheels], DEVICE [cuda; cpu checks the script here, MIXES without cuda ones].
set -uo pipefail
GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  # SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA256=a672150fb4f99d7c8f4168cecdd464069c0ef3a37d8113f22ddb9d48031d03cd  # its model.safetensors, here
TENSORS_SHA256=457f6f4e58dfa445fb73cc480a4c3e97001171268c3485c8579729740404bb71  # bench.gpu.smollm2 digest
MIXES=${MIXES:-fp32-3hop,fp32-cuda-3hop,bf16-cuda-3hop} PROMPTS=${PROMPTS:-50} SMOKE=${SMOKE:-2}
TOLERANCES=${TOLERANCES:-code} DEADLINE=${DEADLINE:-560} DEVICE=${DEVICE:-cuda}
JOBS=${JOBS:-15}
GV=${GV:-/tmp/gv} SITE=${SITE:-/tmp/site}
OUT=${OUT:-$GV/out}
mkdir -p "$GV/parts" "$OUT"
LOG="$OUT/verify-gpu.log"
started=$(date +%s)
say() { echo "[$(( $(date +%s) - started ))s] $*" | tee -a "$LOG" >&2; }
die() { say "FAILED: $*"; exit 1; }

# Stash what this call carried (relative to the checkout the device tool sent: the current directory).
for d in .gpucarry/*/; do
  [ -d "$d" ] || continue
  if [ -d "$d/code" ]; then rm -rf "$GV/code"; cp -r "$d/code" "$GV/code"; fi
  if [ -d "$d/whl" ]; then rm -rf "$GV/whl"; cp -r "$d/whl" "$GV/whl"; fi
  if [ -d "$d/model" ]; then rm -rf "$GV/model"; cp -r "$d/model" "$GV/model"; fi
  [ -f "$d/PARTS" ] && cp "$d/PARTS" "$GV/PARTS"
  for p in "$d"gguf.xz.*; do [ -f "$p" ] && cp "$p" "$GV/parts/"; done
  say "stashed $d: $(ls "$d" | tr '\n' ' ')"
done
[ -d "$GV/code" ] && [ -f "$GV/PARTS" ] || die "nothing stashed yet: call 1 carries .gpucarry/1 (see the header)"
cd "$GV/code" || die "no $GV/code"

GGUF="$GV/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$GGUF" ]; then
  have=$(ls "$GV/parts" | grep -c '^gguf\.xz\.') need=$(cat "$GV/PARTS")
  if [ "$have" -lt "$need" ]; then say "GGUF parts: $have of $need here; carry the next part"; exit 0; fi
  cat "$GV"/parts/gguf.xz.* | python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer)' \
    > "$GGUF.tmp" || die "decompressing the GGUF parts"
  got=$(sha256sum "$GGUF.tmp" | cut -d' ' -f1)
  [ "$got" = "$GGUF_SHA256" ] || { rm -f "$GGUF.tmp"; die "GGUF sha256 $got, expected $GGUF_SHA256 (parts from another split?)"; }
  mv "$GGUF.tmp" "$GGUF" && rm -rf "$GV/parts"
  say "GGUF joined, sha256 as expected"
fi

if [ ! -f "$SITE/.tessera-installed" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$GV"/whl/*.whl \
    >>"$LOG" 2>&1 || die "installing $GV/whl/*.whl; see $LOG"
  touch "$SITE/.tessera-installed"
  say "wheels installed into $SITE"
fi
export PYTHONPATH="$SITE:$PWD" TESSERA_HOME="$GV/home" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

MODEL="$TESSERA_HOME/models/smollm2-135m"
if [ ! -f "$MODEL/manifest.json" ]; then
  if [ -f "$GV/model/tokenizer.json.gz" ]; then
    python3 -c "import gzip, shutil, sys; shutil.copyfileobj(gzip.open(sys.argv[1]), open(sys.argv[1][:-3], 'wb'))" \
      "$GV/model/tokenizer.json.gz" && rm "$GV/model/tokenizer.json.gz" || die "unpacking tokenizer.json.gz"
  fi
  rm -rf "$MODEL"
  python3 -m bench.gpu.smollm2 convert "$GGUF" "$MODEL" --like "$GV/model" --sha "$MODEL_SHA256" \
    --tensors "$TENSORS_SHA256" 2>>"$LOG" | tee -a "$LOG" || die "converting the GGUF; see $LOG"
  [ -f "$MODEL/manifest.json" ] || die "the conversion left no $MODEL/manifest.json"
  say "model converted and checked: $MODEL"
fi

card=cpu
if [ "$DEVICE" != cpu ]; then
  card=$(python3 -c "import re, torch; print(re.sub('[^a-z0-9]+', '-', torch.cuda.get_device_name().lower()).strip('-'))") \
    || die "python3 sees no CUDA device"
fi
say "device $card; commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); mixes $MIXES; jobs $JOBS"
left() { echo $(( DEADLINE - ($(date +%s) - started) )); }
run() {  # run PROMPTS FILE
  local t; t=$(left)
  [ "$t" -gt 30 ] || die "no time left for $1 prompts (DEADLINE $DEADLINE s)"
  timeout "$t" python3 -m bench.verify --honest-only --device "$DEVICE" --mixes "$MIXES" --tolerances "$TOLERANCES" \
    --jobs "$JOBS" --prompts "$1" --json --save "$2" >/dev/null 2>>"$LOG" || die "bench.verify --prompts $1 (rc $?); see $LOG"
  python3 -c "import json, sys; d = json.load(open(sys.argv[1])); print(d['false_penalties'], 'false penalties in',
              d['honest_runs'], 'runs,', d['seconds'], 's')" "$2" | while read -r line; do say "$1 prompts: $line"; done
}
[ "$SMOKE" -gt 0 ] && run "$SMOKE" "$OUT/verify-gpu-$card-smoke.json"
run "$PROMPTS" "$OUT/verify-gpu-$card.json"
say "done"
