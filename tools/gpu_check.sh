#!/usr/bin/env bash
# The checks that only a GPU can make, in one script (make gpu-check runs it):
#   1. install the CUDA wheel if one lies in dist/cu130/ (built elsewhere by `make wheel-cuda`
#      against torch 2.14.1: running it under the GPU machine's torch is the stable-ABI check),
#      else build from source for this GPU's architecture;
#   2. every test that runs on CUDA (the `cuda` marker and the `device` fixture's cuda case);
#   3. the op benchmarks on CUDA, float32 and bfloat16, into bench/results/, with the SigLIP
#      step under several chunk budgets (bench/bench_siglip_chunks.py: where its time goes).
# Each stage has a time limit (GPU_CHECK_TEST_S, GPU_CHECK_BENCH_S seconds per benchmark) so
# that a leased machine's time is never overrun; the summary table is printed last.
# Logs and results go to $RESULTS (default bench/results/gpu-check); with $OUT set (a lent
# machine), a copy of everything goes there as gpu-check.tar.gz.
set -u
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
RESULTS=${RESULTS:-bench/results/gpu-check}
TEST_S=${GPU_CHECK_TEST_S:-240}
BENCH_S=${GPU_CHECK_BENCH_S:-90}
DEADLINE=$((SECONDS + ${GPU_CHECK_TOTAL_S:-500}))  # no benchmark starts that could end after this
BENCHES=${GPU_CHECK_BENCHES:-"siglip:float32 siglip_chunks:bfloat16 rq_spline:float32 contrastive:float32 coupling:float32 reparam:float32 vq:float32 siglip:bfloat16 rq_spline:bfloat16 contrastive:bfloat16 coupling:bfloat16"}
mkdir -p "$RESULTS"
summary=()
stamp() { echo "[gpu-check $(date +%H:%M:%S)] $*"; }

stamp "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$RESULTS/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(), \
torch.cuda.get_device_properties(0).multi_processor_count, 'SMs')" | tee -a "$RESULTS/gpu.txt"

# Extra wheels (peer libraries for the benchmarks) carried in .whl/.
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu-check-site .whl/*.whl \
    && export PYTHONPATH=/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}
fi

stamp "install"
smoke='import gencore.cli as c, torch, gencore; i = c._info(); \
missing = [n for n, o in i["ops"].items() if "CUDA" not in o["kernels"]]; assert not missing, missing; \
x = torch.randn(64, 32, device="cuda"); y, _ = gencore.ops.affine_coupling(x, torch.zeros_like(x), torch.zeros_like(x)); \
torch.cuda.synchronize(); assert torch.equal(y, x); print("CUDA kernels registered and running:", ", ".join(i["ops"]))'
installed=""
for w in dist/cu130/gencore-*.whl; do
  [ -f "$w" ] || continue
  if $PY -m pip install -q --no-deps --force-reinstall "$w" && (cd /tmp && $PY -c "$smoke"); then
    installed="wheel $(basename "$w") (built against another torch), under torch $($PY -c 'import torch; print(torch.__version__)')"
  fi
done
if [ -z "$installed" ]; then
  stamp "no usable prebuilt wheel: building from source"
  cap=$($PY -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
  GENCORE_CUDA=ON TORCH_CUDA_ARCH_LIST=$cap CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    $PY -m pip install -q --no-build-isolation --no-deps -Cbuild-dir=build/gpu . 2>&1 | tail -20
  (cd /tmp && $PY -c "$smoke") && installed="source build for sm_${cap/./}"
fi
[ -n "$installed" ] || { stamp "FAILED: no working CUDA build"; exit 1; }
summary+=("install: $installed")

stamp "CUDA tests"
xdist=""
$PY -c "import xdist" 2>/dev/null && xdist="-n 8"
timeout "$TEST_S" $PY -m pytest -q -p no:cacheprovider $xdist -m "not slow" -k cuda --ignore=tests/cuda_emulation \
  --junitxml="$RESULTS/cuda-tests.xml" tests > "$RESULTS/cuda-tests.log" 2>&1
rc=$?
tail -25 "$RESULTS/cuda-tests.log"
summary+=("CUDA tests (exit $rc): $(grep -E '(passed|failed|error)' "$RESULTS/cuda-tests.log" | tail -1)")

for b in $BENCHES; do
  name=${b%%:*}; dtype=${b##*:}
  left=$((DEADLINE - SECONDS))
  if [ "$left" -lt 30 ]; then summary+=("bench $name $dtype: not run (time limit)"); continue; fi
  stamp "bench $name $dtype"
  timeout "$(( left < BENCH_S ? left : BENCH_S ))" $PY "bench/bench_$name.py" --device cuda --dtype "$dtype" --out bench/results \
    > "$RESULTS/bench-$name-$dtype.log" 2>&1
  rc=$?
  tail -4 "$RESULTS/bench-$name-$dtype.log"
  summary+=("bench $name $dtype: exit $rc")
done
cp bench/results/*-cuda-* "$RESULTS"/ 2>/dev/null
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/gpu-check.tar.gz" "$RESULTS" bench/results/*-cuda-* 2>/dev/null
fi
stamp "summary"
printf '  %s\n' "${summary[@]}"
