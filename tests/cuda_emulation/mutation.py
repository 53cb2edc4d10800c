"""Mutation check of the emulated CUDA suite: each planted bug of build.MUTANTS is built into
its own emulated library, and the suite (tests/cuda_emulation) must fail against it.

    python tests/cuda_emulation/mutation.py [--only NAME ...]

A mutant listed in SANITIZED is run under that sanitizer build (its bug changes no value:
only the sanitizer can see it). Exit status 0 when every mutant was caught.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import build  # noqa: E402

SANITIZED = {"wmma-store-race": "tsan"}

# Tests run alone, before the suite, for the mutants that the mutated op's test file would
# otherwise reach only after a minute of other tests (pytest groups the contrastive tests by
# their SM-count fixture, so the sigmoid loss's run after 320 others). When they pass, the
# whole suite runs as for any other mutant.
FIRST = {
    "sigmoid-positive-as-negative": ["test_emu_contrastive.py::test_sigmoid_contrastive_loss"],
    "fused-loss-positive-as-negative": ["test_emu_contrastive.py::test_sigmoid_contrastive_loss"],
    # only the GEMM path's product over several key slices and a remainder sees it
    "split-k-remainder-dropped": ["test_emu_contrastive.py::test_gemm_path_every_dtype"],
    # a memory property: only the test that measures the chunk's peak sees it
    "split-k-partials-own-buffer": ["test_emu_contrastive.py::test_gemm_path_half_types_hold_only_their_chunk"],
}


def sanitizer_env(variant: str) -> dict[str, str]:
    """The environment a Python process needs to load a sanitizer build of the library."""
    if variant == "plain":
        return {}

    def lib(name):
        return subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True,
                              check=True).stdout.strip()

    runtime = {"asan": "libasan.so", "tsan": "libtsan.so"}[variant]
    env = {"LD_PRELOAD": f"{lib(runtime)} {lib('libstdc++.so')}"}
    if variant == "asan":
        env["ASAN_OPTIONS"] = "detect_leaks=0"
        env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
    else:
        # libgomp is not instrumented: ATen's own threads would look racy.
        env["OMP_NUM_THREADS"] = "1"
        env["TSAN_OPTIONS"] = f"suppressions={HERE / 'tsan.supp'} halt_on_error=1 exitcode=66"
    return env


def suite_files(name: str) -> list[str]:
    """The whole emulated suite, the test file of the mutated op first (``-x`` stops at the
    first failure: a planted bug in csrc/vq is caught in seconds instead of after every
    contrastive test). A mutant in a shared header keeps the plain order."""
    files = sorted(HERE.glob("test_emu_*.py"))
    op = Path(build.MUTANTS[name][0]).parts[0]
    first = [f for f in files if f.name == f"test_emu_{op}.py"]
    return [str(f) for f in first + [f for f in files if f not in first]]


def run_mutant(name: str) -> tuple[bool, str, float]:
    variant = SANITIZED.get(name, "plain")
    start = time.monotonic()
    lib = build.build(variant, mutant=name, verbose=False)
    env = {**os.environ, **sanitizer_env(variant), "GENCORE_EMU_LIB": str(lib), "GENCORE_EMU_VARIANT": variant}
    pytest = [sys.executable, "-m", "pytest", "-q", "-x", "-s", "-p", "no:cacheprovider"]
    first = [str(HERE / node) for node in FIRST.get(name, [])]
    for tests in (first, suite_files(name)):
        if not tests:
            continue
        r = subprocess.run(pytest + tests, cwd=build.ROOT, env=env, capture_output=True, text=True)
        out = r.stdout + r.stderr
        if tests is first and r.returncode in (4, 5):  # a misspelt node: say so, not a slow pass
            raise SystemExit(f"mutation.FIRST[{name!r}] ran no test (pytest exit {r.returncode}): {out[-500:]}")
        # Caught: a failed test (exit 1), or the sanitizer's report (its exit code 66).
        caught = r.returncode in (1, 66)
        if caught:
            break
    lines = [ln for ln in out.splitlines() if ln.startswith(("FAILED", "E  ", "SUMMARY: ThreadSanitizer", "simt:"))]
    return caught, (lines[0] if lines else out.strip().splitlines()[-1] if out.strip() else f"exit {r.returncode}"), time.monotonic() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", choices=sorted(build.MUTANTS))
    args = ap.parse_args()
    names = args.only or sorted(build.MUTANTS)
    missed = []
    for name in names:
        caught, evidence, seconds = run_mutant(name)
        print(f"mutant {name} [{SANITIZED.get(name, 'plain')}]: {'caught' if caught else 'MISSED'} "
              f"({seconds:.0f} s): {evidence[:300]}", flush=True)
        if not caught:
            missed.append(name)
    print(f"mutation check: {len(names) - len(missed)} of {len(names)} planted bugs caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
