#!/usr/bin/env bash
# Issue 14's GPU hop profile in one device call: where each millisecond of a decode step goes at each
# stage of a 3-stage ring of a Llama-3.2-1B-shaped model (seeded random weights, bf16) on one GPU, at 1
# and 16 sessions, first as is and then with the CUDA MPS control daemon running (the three stage
# processes' kernels then share the GPU without time-slicing). Here, from the main checkout:
#
#   bash bench/gpu/wheels.sh                                   # once: fills .whl/
#   rm -rf .gpucarry/h && mkdir -p .gpucarry/h && git clone -q --depth 1 file://$PWD .gpucarry/h/code
#   device run, carry [".whl", ".gpucarry/h"], command: bash .gpucarry/h/code/bench/gpu/profile.sh
#
# (the shallow clone makes the results' provenance the committed HEAD, clean). Writes under $OUT:
# hopprofile-gpu-<card>-1b-bf16.json and hopprofile-gpu-<card>-1b-bf16-mps.json, stageprof-gpu-<card>-1b-bf16.json
# (bench.stageprof: a stage's forward opened up), hopprofile-gpu-<card>-1b-bf16-gil1ms.json (a 1 ms GIL switch
# interval in every process instead of Python's 5 ms), stageprof-gpu-<card>-1b-bf16-b16.json (the same at 16
# sessions batched), and their logs. PROFILE_ONLY=stageprof or =gil runs only that part; =batch the plain hop
# profile and the two stage profiles. (The committed -mps.json was made at 9ee073c, when the workers used 1 ms;
# -gil5ms.json at b6714e6 with 5 ms set here, which is now the default; the plain hop profile and the stage
# profiles at dbc6395 with PROFILE_ONLY=batch, whose 2 runs include a cold first one: read its runs, not the median.)
# Seen 2026-12-02 (commit 9ee073c): 207 s on a warm H200; PROFILE_ONLY=batch 125 s.
set -uo pipefail
WHEELS=${WHEELS:-$PWD/.whl}
cd "$(dirname "$0")/../.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD TESSERA_HOME=/tmp/th PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-bench/results}
card=$(python3 -c "import re, torch; print(re.sub('[^a-z0-9]+', '-', torch.cuda.get_device_name().lower()).strip('-'))")
python3 -m bench.gpu.models --sizes 1b --out /tmp/m --device cuda > "$OUT/models.log" 2>&1 || { tail -20 "$OUT/models.log"; exit 1; }
if [ -z "${PROFILE_ONLY:-}" ]; then
P="python3 -m bench.hopprofile --model /tmp/m/llama-1b --device cuda --dtype bfloat16 --sessions 1,16 --tokens 32 --repeats 3 --json"
timeout 220 $P --save "$OUT/hopprofile-gpu-$card-1b-bf16.json" 2> "$OUT/hopprofile.log" >/dev/null
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps CUDA_MPS_LOG_DIRECTORY=/tmp/mpslog
mkdir -p /tmp/mps /tmp/mpslog
nvidia-cuda-mps-control -d && echo "MPS on"
timeout 220 $P --save "$OUT/hopprofile-gpu-$card-1b-bf16-mps.json" 2> "$OUT/hopprofile-mps.log" >/dev/null
echo quit | nvidia-cuda-mps-control
grep "tok/s" "$OUT/hopprofile.log" "$OUT/hopprofile-mps.log"
fi
# the same at a 1 ms GIL switch interval instead of Python's default 5 ms
if [ "${PROFILE_ONLY:-}" = gil ] || [ -z "${PROFILE_ONLY:-}" ]; then
  TESSERA_GIL_SWITCH_S=0.001 timeout 200 python3 -m bench.hopprofile --model /tmp/m/llama-1b --device cuda \
    --dtype bfloat16 --sessions 1,16 --tokens 32 --repeats 2 --json \
    --save "$OUT/hopprofile-gpu-$card-1b-bf16-gil1ms.json" 2> "$OUT/hopprofile-gil1ms.log" >/dev/null
  grep "tok/s" "$OUT/hopprofile-gil1ms.log"
  [ "${PROFILE_ONLY:-}" = gil ] && exit 0
fi
# the ring as is (PROFILE_ONLY=batch: with the batch stage profile below, without MPS and GIL variants)
if [ "${PROFILE_ONLY:-}" = batch ]; then
  timeout 220 python3 -m bench.hopprofile --model /tmp/m/llama-1b --device cuda --dtype bfloat16 --sessions 1,16 \
    --tokens 32 --repeats 2 --json --save "$OUT/hopprofile-gpu-$card-1b-bf16.json" 2> "$OUT/hopprofile.log" >/dev/null
  grep "tok/s" "$OUT/hopprofile.log"
fi
# inside a stage's forward, one session, one process: the stages against the unsplit model, and a cProfile
timeout 120 python3 -m bench.stageprof --model /tmp/m/llama-1b --device cuda --dtype bfloat16 --tokens 32 --json \
  --save "$OUT/stageprof-gpu-$card-1b-bf16.json" > /dev/null 2> "$OUT/stageprof.log" || tail -5 "$OUT/stageprof.log"
# the same with 16 sessions batched as the worker batches them, against the unsplit model at batch 16
timeout 120 python3 -m bench.stageprof --model /tmp/m/llama-1b --device cuda --dtype bfloat16 --tokens 32 --batch 16 \
  --json --save "$OUT/stageprof-gpu-$card-1b-bf16-b16.json" > /dev/null 2> "$OUT/stageprof-b16.log" \
  || tail -5 "$OUT/stageprof-b16.log"
