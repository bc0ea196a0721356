# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.lamina-installed
export TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS :=
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test test-slow test-all lint bench-cpu bench-demo clean

setup: $(STAMP)

# Without a GPU, install PyTorch's CPU build first (a plain `torch` requirement would pull a
# multi-GB CUDA build); with one, the package's own `torch>=2.6` takes the user's CUDA build.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q "torch==2.13.0" || $(PY) -m pip install -q "torch>=2.6"; fi
	$(PY) -m pip install -q -e ".[dev,qlora]"
	@command -v chromium >/dev/null 2>&1 || { (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "note: could not install chromium; browser tests will be skipped"; }
	touch $(STAMP)

demo: setup
	$(VENV)/bin/lamina demo

test: setup
	$(PY) -m pytest -q

# The slow tests also exercise the optional TensorBoard / W&B reporters and the GGUF export.
test-slow: setup
	$(PY) -m pip install -q -e ".[tracking,export]"
	$(PY) -m pytest -q -m slow

test-all: setup
	$(PY) -m pip install -q -e ".[tracking,export]"
	$(PY) -m pytest -q -m "slow or not slow"

lint: setup
	$(VENV)/bin/ruff check src tests bench

bench-cpu: setup
	$(PY) bench/sft_throughput.py --device cpu

# A first `lamina demo` from an empty workspace and a second one: seconds per stage, tokens/s, load.
bench-demo: setup
	$(PY) bench/cpu_demo.py

clean:
	rm -rf $(VENV) .lamina
