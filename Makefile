# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test test-slow typecheck pycompat docs-check lint importlint clean system-deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch from pip (the pinned wheels are on this machine's disk; uv/poetry would download GBs)
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e '.[all]' $(TORCH_PINS)
	# tensorrt-stubs declares a dependency on tensorrt, whose wheels cannot be fetched here: stubs only
	$(BIN)/python -m pip install -q --no-deps 'tensorrt-stubs>=10.0'
	$(BIN)/python -m pip install -q pytest pytest-xdist mypy hypothesis vermin 'ruff>=0.17,<0.18' 'import-linter>=2.17,<3'
	# edgecv[ultralytics] for tests/test_adapters_ultralytics.py: AGPL, so not in `all`; --no-deps keeps its
	# opencv-python (a second cv2) out, the rest of its dependencies are in the extra
	$(BIN)/python -m pip install -q --no-deps 'ultralytics>=8.3'
	$(BIN)/python -m pip install -q 'polars>=0.20' 'ultralytics-thop>=2.2' 'requests>=2.23' $(TORCH_PINS)
	touch $(STAMP)

install: $(STAMP)

# real media servers for the stream tests (ffmpeg HTTP/MPEG-TS, GStreamer RTSP driven by Debian's python3);
# headless Chromium opens the HTML report in tests/test_report.py
APT_PKGS := ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good chromium mosquitto
system-deps:
	@missing=$$(for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

demo: install
	EDGECV_DEMO=1 bash scripts/demo.sh

# tensorrt-stubs ships no py.typed marker and its bindings stub has two syntax errors under current mypy
# (a parameter named `in`, a non-default after a default): check against a patched copy, so misspelt TensorRT
# names really fail (with the stubs as installed, mypy silently treats every trt.* name as Any).
# One mypy run over the whole package with MYPYPATH set: backends/tensorrt.py is checked against the patched
# stubs exactly as when it was checked alone, and every other module gets the plain `mypy edgecv` check.
typecheck: install
	rm -rf .mypy_stubs && mkdir -p .mypy_stubs
	SP=$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	  cp -r $$SP/tensorrt $$SP/tensorrt_bindings .mypy_stubs/
	sed -i 's/, in: list/, in_: list/g; s/power: Weights = None, channel_axis: int)/power: Weights = None, channel_axis: int = 0)/' \
	  .mypy_stubs/tensorrt_bindings/tensorrt.pyi
	MYPYPATH=.mypy_stubs $(BIN)/mypy --follow-imports=silent edgecv

# JetPack 6 ships Python 3.10: nothing in the package may need a newer Python (vermin exits 1 on a violation)
pycompat: install
	$(BIN)/vermin -t=3.10- --violations --no-tips --eval-annotations edgecv

# docs/cli.md is generated from the CLI: a new or renamed option must show up there (one idea, one name)
docs-check: install
	$(BIN)/python scripts/cli_reference.py --check

# ruff's default rules (pinned minor: a new ruff adds rules) and its formatter; exceptions in pyproject.toml
lint: install
	$(BIN)/ruff check edgecv tests scripts
	$(BIN)/ruff format --check edgecv tests scripts

# the import contracts in pyproject.toml ([tool.importlinter]): layers, the torch-free runtime tier, no cycles
importlint: install
	PYTHONPATH=$(CURDIR) $(BIN)/lint-imports --no-cache

test: install system-deps lint importlint typecheck pycompat docs-check
	$(BIN)/python -m pytest -n 2 --dist loadgroup --durations=25 tests

test-slow: install system-deps
	$(BIN)/python -m pytest -m slow tests

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache
