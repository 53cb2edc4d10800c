# gencore: set-up, tests, demo, benchmarks and CUDA checks.
#
#   make demo        create .venv, install everything, run `gencore demo`
#   make test        create .venv, install everything, run the test suite
#   make bench       full benchmarks -> bench/results/, docs/benchmarks.md refreshed
#   make docs        the documentation site (mkdocs, docs/ + API reference) -> site/, warnings as errors
#   make wheel       the CPU wheel (stable ABI, abi3), repaired to a manylinux tag -> dist/
#   make wheel-cuda  the CUDA 13 wheel built against torch 2.14.1+cu130 -> dist/cu130/
#   make wheel-test  the CPU wheel installed into .venv (torch 2.13) and .venv-cuda (2.14.1), op tests
#   make sdist-test  the sdist installed with build isolation into .venv-cuda (torch 2.14.1)
#   make cuda-check  the CUDA wheel (sm_80, sm_90) against torch 2.14.1+cu130, installed in
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
# The stable-ABI target (CMakeLists.txt: GENCORE_TORCH_TARGET = 2.11), as TORCH_TARGET_VERSION.
TORCH_TARGET_HEX := 0x020b000000000000
PYTEST_ARGS ?=
SOURCES   := $(shell find csrc python -type f \( -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' -o -name '*.py' \)) CMakeLists.txt pyproject.toml

.PHONY: demo test bench docs cuda-check cuda-compile gpu-check install clean emu-build cuda-emulate wheel wheel-cuda \
	wheel-test sdist-test \
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
	$(VPY) -m pip install --quiet --no-deps open_clip_torch==3.3.0
	$(VPY) bench/bench_siglip.py --out bench/results
	$(VPY) bench/bench_vq.py --out bench/results
	$(VPY) bench/bench_rq_spline.py --out bench/results
	$(VPY) bench/bench_flow_libraries.py --out bench/results
	$(VPY) bench/update_docs.py

# The documentation site: docs/*.md and the API reference that mkdocstrings generates from
# the docstrings (read statically: no build of the extension needed), into site/. --strict:
# a warning (a broken link or anchor, a docstring griffe cannot parse) fails the build.
$(VENV)/.docs-deps: $(VENV)/.deps requirements-docs.txt
	$(VPY) -m pip install --quiet -r requirements-docs.txt
	touch $@

docs: $(VENV)/.docs-deps
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# The whole extension built against a CUDA torch (docs/install.md) as the CUDA wheel
# (make wheel-cuda): every .cu compiled by the toolkit's own nvcc (the `nvcc` first on PATH
# may be a wrapper) for sm_80 and sm_90, the symbol audit, then the wheel installed into
# .venv-cuda (torch 2.14.1+cu130), imported without a GPU, and its CUDA kernels must be
# registered.
cuda-check: wheel-cuda
	.venv-cuda/bin/python -m pip install --quiet --no-deps --force-reinstall dist/cu130/gencore-*.whl
	cd /tmp && $(abspath .venv-cuda/bin/python) -c "import json, gencore.cli as c; i = c._info(); \
	  missing = [n for n, o in i['ops'].items() if 'CUDA' not in o['kernels']]; \
	  assert i['compiled_backends'] == ['cpu', 'cuda'] and not missing, (i['compiled_backends'], missing); \
	  import torch, gencore; x = torch.randn(4, 6, dtype=torch.float64); \
	  y, ld = gencore.ops.masked_affine_coupling(x, torch.zeros(4, 6, dtype=torch.float64)); \
	  assert torch.equal(y, x) and not ld.any(); \
	  print('cuda-check: CUDA kernels registered for', ', '.join(i['ops']), '(torch', i['torch'] + \
	        '); CPU ops run', 'with' if torch.cuda.is_available() else 'without', 'a GPU')"

# Faster, weaker: each .cu compiled to device code against the CPU torch headers of .venv
# (stable-ABI headers only: the same on a CPU and a CUDA torch).
cuda-compile: $(VENV)/.deps
	@set -e; inc=$$($(VPY) -c "import torch, os; print(os.path.dirname(torch.__file__) + '/include')"); \
	for f in $$(find csrc -name '*.cu'); do \
	  echo "nvcc $$f ($(CUDA_ARCHS))"; \
	  $(NVCC) -std=c++20 -O3 --expt-relaxed-constexpr $(foreach a,$(CUDA_ARCHS),-gencode arch=compute_$(a),code=sm_$(a)) \
	    -DUSE_CUDA -DTORCH_TARGET_VERSION=$(TORCH_TARGET_HEX) -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ \
	    -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ \
	    -Icsrc -I$$inc -Xcompiler -fPIC -c $$f -o /dev/null; \
	done; echo "cuda-compile: all CUDA sources compiled for $(CUDA_ARCHS)"

# Wheels. The extension uses only the LibTorch stable ABI (target torch 2.11) and Python's
# limited API, so one wheel serves every torch >= 2.11 and every CPython >= 3.10.
# auditwheel gives it a manylinux tag; torch's own libraries (and, for CUDA, the CUDA
# runtime that torch's nvidia packages ship) are excluded, not vendored: the RUNPATH
# finds them in the installed torch ($$ORIGIN/../torch/lib). tools/wheel_audit.py then
# checks the symbols, the links, the RUNPATH, the tag and the torch requirement.
WHEEL_EXCLUDES = --exclude 'libtorch*.so' --exclude 'libc10*.so' --exclude 'libcudart.so*'
wheel: $(VENV)/.deps
	rm -rf build/wheelhouse && mkdir -p build/wheelhouse dist
	rm -f dist/gencore-*.whl
	$(VPY) -m pip wheel --quiet --no-build-isolation --no-deps -Cbuild-dir=build/wheel -w build/wheelhouse .
	PATH=$(abspath $(VENV))/bin:$$PATH $(VPY) -m auditwheel repair $(WHEEL_EXCLUDES) -w dist build/wheelhouse/gencore-*.whl
	$(VPY) -m auditwheel show dist/gencore-*.whl
	$(VPY) tools/wheel_audit.py dist/gencore-*.whl

wheel-cuda: $(VENV)/.deps
	test -x .venv-cuda/bin/python || $(PYTHON) -m venv .venv-cuda
	.venv-cuda/bin/python -m pip install --quiet torch==2.14.1 $$(grep -E '^(numpy|cmake|ninja|scikit-build-core)==' requirements-dev.txt)
	rm -rf build/wheelhouse-cuda && mkdir -p build/wheelhouse-cuda dist/cu130
	rm -f dist/cu130/gencore-*.whl
	GENCORE_CUDA=ON TORCH_CUDA_ARCH_LIST="8.0;9.0" CUDACXX=$(NVCC) \
	  .venv-cuda/bin/python -m pip wheel --quiet --no-build-isolation --no-deps -Cbuild-dir=build/wheel-cuda \
	  -w build/wheelhouse-cuda .
	PATH=$(abspath $(VENV))/bin:$$PATH LD_LIBRARY_PATH=$$(dirname $(NVCC))/../lib64 $(VPY) -m auditwheel repair $(WHEEL_EXCLUDES) \
	  -w dist/cu130 build/wheelhouse-cuda/gencore-*.whl
	$(VPY) tools/wheel_audit.py --cuda dist/cu130/gencore-*.whl

# One CPU wheel, several torch versions: the file of `make wheel` installed (--no-deps: the
# environment keeps its torch) into .venv (torch 2.13.0) and .venv-cuda (torch 2.14.1+cu130,
# made by make cuda-check), and the op tests (reference comparisons, gradcheck, opcheck,
# torch.compile) and short fits run under each. TORCHES adds environments.
WHEEL_TESTS = tests/ops tests/build/test_stable_abi.py tests/runs/test_train.py
TORCHES ?= $(VPY) .venv-cuda/bin/python
TEST_PINS = $$(grep -E '^(numpy|scipy|scikit-learn|safetensors|matplotlib|tqdm|pytest|hypothesis)==' requirements-dev.txt)
wheel-test: wheel
	set -e; for py in $(TORCHES); do \
	  $$py -m pip install --quiet $(TEST_PINS); \
	  $$py -m pip install --quiet --no-deps --force-reinstall dist/gencore-*.whl; \
	  echo "wheel-test: $$($$py -c 'import torch; print("torch", torch.__version__)')"; \
	  $$py -m pytest -q -p no:cacheprovider -m "not slow" $(WHEEL_TESTS); \
	done

# A source install as a user makes it, build isolation on: the sdist built, then installed
# into .venv-cuda (torch 2.14.1). The isolated build compiles against the torch==2.13.0 of
# build-system.requires; the stable ABI makes that build load under 2.14.1.
sdist-test: $(VENV)/.deps
	rm -rf build/sdist && mkdir -p build/sdist
	$(VPY) -m build --sdist --no-isolation -o build/sdist .
	.venv-cuda/bin/python -m pip install --quiet --force-reinstall --no-deps build/sdist/gencore-*.tar.gz
	cd /tmp && $(abspath .venv-cuda/bin/python) -c "import torch, gencore; \
	  x = torch.randn(4, 6); y, ld = gencore.ops.masked_affine_coupling(x, torch.zeros(4, 6)); \
	  assert torch.equal(y, x) and ld.abs().max() == 0; \
	  print('sdist-test: built in isolation, imports and runs under torch', torch.__version__)"

# For the lent GPU machine: its python3 (3.12) already has torch 2.11.0+cu130, nvcc, CMake,
# ninja and scikit-build-core, and no internet. The stable-ABI target is torch 2.11, so both
# work there: this source build (below), and the CUDA wheel of `make wheel-cuda` built here
# against 2.14.1 (pip install dist/cu130/gencore-*.whl --no-deps). `gencore info` prints the
# torch the build was made with and the oldest it loads in.
# tools/gpu_check.sh: the CUDA wheel from dist/cu130/ when there is one (make wheel-cuda,
# built against torch 2.14.1: the stable-ABI check under the GPU machine's torch), else a
# source build for this GPU; every CUDA test; the op benchmarks into bench/results/.
gpu-check:
	PYTHON=$(PYTHON) bash tools/gpu_check.sh

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
	rm -rf build dist $(VENV) .venv-cuda demo-out site
