# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test test-slow typecheck clean system-deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch from pip (the pinned wheels are on this machine's disk; uv/poetry would download GBs)
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e '.[all]' $(TORCH_PINS)
	# tensorrt-stubs declares a dependency on tensorrt, whose wheels cannot be fetched here: stubs only
	$(BIN)/python -m pip install -q --no-deps 'tensorrt-stubs>=10.0'
	$(BIN)/python -m pip install -q pytest pytest-xdist mypy
	touch $(STAMP)

install: $(STAMP)

system-deps:
	@command -v ffmpeg >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null)

demo: install
	EDGECV_DEMO=1 bash scripts/demo.sh

typecheck: install
	$(BIN)/mypy --follow-imports=silent edgecv/backends/tensorrt.py

test: install system-deps typecheck
	$(BIN)/python -m pytest -n 2 --dist loadgroup tests

test-slow: install system-deps
	$(BIN)/python -m pytest -m slow tests

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache
