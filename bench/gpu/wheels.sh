#!/usr/bin/env bash
# Download, here, the cp312 wheels that bench/gpu/run.sh installs on a GPU machine. The H200 image has
# torch 2.11, transformers 5.17, tokenizers 0.23.2, huggingface-hub 1.33, protobuf 7.36.2, click, rich,
# numpy, safetensors and regex; these are the repository's pins of what it lacks or has older
# (grpcio: the generated stubs need 1.85.1; transformers: the shard code is checked on 5.23):
#
#   bash bench/gpu/wheels.sh        # fills .whl/ (ignored by git through .git/info/exclude)
set -euo pipefail
cd "$(dirname "$0")/../.."
exclude=$(git rev-parse --git-path info/exclude)
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
PINS=(
  transformers==5.23.0 grpcio==1.85.1 pydantic==2.14.3 pydantic_core==2.50.4 annotated-types==0.8.0
  typing-inspection==0.4.5 eth-account==0.14.0 eth-hash==0.8.0 eth-keyfile==0.10.0
  eth-keys==0.8.0 eth-rlp==3.0.0 eth-typing==6.0.0 eth-utils==6.0.0 eth_abi==6.0.0 rlp==5.0.0 hexbytes==2.0.0
  coincurve==21.0.0 pycryptodome==3.24.1 bitarray==3.12.3 ckzg==2.1.8 cytoolz==1.2.0 toolz==1.2.0
  parsimonious==0.10.0 py-ecc==8.0.0
)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${PINS[@]}"
du -sh .whl
