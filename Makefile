# gencore: set-up, tests, demo, benchmarks and CUDA checks.
#
#   make demo        create .venv, install everything, run `gencore demo`
#   make test        create .venv, install everything, run the test suite
#   make bench       full benchmarks -> bench/results/, README table refreshed
#   make cuda-check  full CUDA build (sm_80, sm_90) against torch 2.14.1+cu130 in
#                    .venv-cuda, then checks that the CUDA kernels are registered
#   make cuda-compile  only compile every .cu with nvcc against the CPU torch headers
#   make gpu-check   on a machine with a GPU: CUDA build, CUDA tests, GPU benchmarks
#   make cuda-emulate  every .cu built against the SIMT emulator (tests/cuda_emulation) and
#                    its suite run in forward, reverse and random thread order, on CPU
#   make cuda-emulate-sanitize  the same suite under ASan+UBSan and under TSan
#   make cuda-emulate-mutants   planted kernel bugs, each of which the suite must catch

PYTHON    ?= python3
VENV      ?= .venv
VPY       := $(VENV)/bin/python
NVCC      ?= $(firstword $(wildcard /usr/local/cuda/bin/nvcc /usr/local/cuda-13.0/bin/nvcc) nvcc)
CUDA_ARCHS ?= 80 90
PYTEST_ARGS ?=
SOURCES   := $(shell find csrc python -type f \( -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' -o -name '*.py' \)) CMakeLists.txt pyproject.toml

.PHONY: demo test bench cuda-check cuda-compile gpu-check install clean emu-build cuda-emulate \
	cuda-emulate-asan cuda-emulate-sanitize cuda-emulate-mutants

$(VENV)/.deps: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# --no-build-isolation: build against the pinned torch in the venv instead of letting
# pip fetch an unpinned (CUDA, multi-GB) torch into an isolated environment.
$(VENV)/.installed: $(VENV)/.deps $(SOURCES)
	$(VPY) -m pip install --quiet --no-build-isolation --no-deps .
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/gencore demo

# The emulated CUDA library (tests/cuda_emulation/build.py: incremental, objects cached).
emu-build: install
	$(VPY) tests/cuda_emulation/build.py

# pytest exits 5 when it collected nothing: a suite that ran no test has failed.
test: install emu-build
	@$(VPY) -m pytest -m "not slow" $(PYTEST_ARGS) tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: install
	$(VPY) bench/bench_coupling.py --out bench/results
	$(VPY) bench/bench_flows.py --out bench/results
	$(VPY) bench/bench_reparam.py --out bench/results
	$(VPY) bench/bench_contrastive.py --out bench/results
	$(VPY) -m pip install --quiet -r requirements-bench.txt
	$(VPY) bench/bench_flow_libraries.py --out bench/results
	$(VPY) bench/update_readme.py

# The whole extension built against a CUDA torch (DESIGN.md section 5): every .cu is
# compiled by the toolkit's own nvcc (the `nvcc` first on PATH may be a wrapper) for
# sm_80 and sm_90, linked against libtorch_cuda, imported, and its CUDA kernels must
# be registered. Runs without a GPU.
cuda-check:
	test -x .venv-cuda/bin/python || $(PYTHON) -m venv .venv-cuda
	.venv-cuda/bin/python -m pip install --quiet torch==2.14.1 numpy "cmake>=3.26" ninja pybind11 scikit-build-core
	GENCORE_CUDA=ON TORCH_CUDA_ARCH_LIST="8.0;9.0" CUDACXX=$(NVCC) \
	  .venv-cuda/bin/python -m pip install --quiet --no-build-isolation --no-deps -Cbuild-dir=build/cuda .
	cd /tmp && $(abspath .venv-cuda/bin/python) -c "import json, gencore.cli as c; i = c._info(); \
	  missing = [n for n, o in i['ops'].items() if 'CUDA' not in o['kernels']]; \
	  assert i['compiled_backends'] == ['cpu', 'cuda'] and not missing, (i['compiled_backends'], missing); \
	  print('cuda-check: CUDA kernels registered for', ', '.join(i['ops']), '(torch', i['torch'] + ')')"

# Faster, weaker: each .cu compiled to device code against the CPU torch headers of
# .venv (a CPU torch ships no generated c10/cuda macros header: the define stands in).
cuda-compile: $(VENV)/.deps
	@set -e; inc=$$($(VPY) -c "import torch, os; print(os.path.dirname(torch.__file__) + '/include')"); \
	for f in $$(find csrc -name '*.cu'); do \
	  echo "nvcc $$f ($(CUDA_ARCHS))"; \
	  $(NVCC) -std=c++20 -O3 --expt-relaxed-constexpr $(foreach a,$(CUDA_ARCHS),-gencode arch=compute_$(a),code=sm_$(a)) \
	    -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ \
	    -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ -D_GLIBCXX_USE_CXX11_ABI=1 \
	    -Icsrc -I$$inc -I$$inc/torch/csrc/api/include -Xcompiler -fPIC -c $$f -o /dev/null; \
	done; echo "cuda-compile: all CUDA sources compiled for $(CUDA_ARCHS)"

# For the lent GPU machine: its python3 already has a CUDA torch, nvcc, CMake, ninja,
# pybind11 and scikit-build-core, and no internet.
gpu-check:
	GENCORE_CUDA=ON TORCH_CUDA_ARCH_LIST=9.0 $(PYTHON) -m pip install --no-build-isolation --no-deps -Cbuild-dir=build/gpu .
	$(PYTHON) -m gencore.cli info
	$(PYTHON) -m pytest -q -rs tests
	$(PYTHON) bench/bench_coupling.py --device cuda --dtype float32 --out bench/results
	$(PYTHON) bench/bench_coupling.py --device cuda --dtype bfloat16 --out bench/results
	$(PYTHON) bench/bench_reparam.py --device cuda --dtype float32 --out bench/results
	$(PYTHON) bench/bench_contrastive.py --device cuda --dtype float32 --out bench/results
	$(PYTHON) bench/bench_contrastive.py --device cuda --dtype bfloat16 --out bench/results
	if [ -n "$$OUT" ]; then cp bench/results/*cuda* "$$OUT"/; fi

# The CUDA kernels executed on CPU: the emulated suite in three thread/block orders.
EMU_PYTEST = $(VPY) -m pytest -q -p no:cacheprovider tests/cuda_emulation
cuda-emulate: emu-build
	for order in forward reverse random:20261202; do \
	  echo "cuda-emulate: thread order $$order"; \
	  GENCORE_EMU_ORDER=$$order $(EMU_PYTEST) || exit 1; \
	done

# Sanitizer builds, loaded into the (uninstrumented) interpreter with their runtime
# preloaded; -s: a sanitizer report goes to the terminal, not to pytest's capture.
# TSan: one OpenMP thread (libgomp is not instrumented; ATen's own threads would look racy).
ASAN_ENV = LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libstdc++.so)" \
  ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 GENCORE_EMU_VARIANT=asan
TSAN_ENV = LD_PRELOAD="$$(gcc -print-file-name=libtsan.so) $$(gcc -print-file-name=libstdc++.so)" \
  OMP_NUM_THREADS=1 TSAN_OPTIONS="suppressions=$(CURDIR)/tests/cuda_emulation/tsan.supp halt_on_error=1" \
  GENCORE_EMU_VARIANT=tsan
cuda-emulate-asan: install
	$(VPY) tests/cuda_emulation/build.py --variant asan
	$(ASAN_ENV) GENCORE_EMU_ORDER=reverse $(EMU_PYTEST) -s

cuda-emulate-sanitize: cuda-emulate-asan
	$(VPY) tests/cuda_emulation/build.py --variant tsan
	$(TSAN_ENV) GENCORE_EMU_ORDER=random:7 $(EMU_PYTEST) -s

cuda-emulate-mutants: install
	$(VPY) tests/cuda_emulation/mutation.py

clean:
	rm -rf build dist $(VENV) .venv-cuda demo-out
