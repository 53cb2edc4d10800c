"""Builds the emulated CUDA op library: every csrc/**/*.cu compiled as host C++ against the
SIMT emulator in tests/cuda_emulation/simt, registered as the ``gencore_emu`` ops on the CPU key.

    python tests/cuda_emulation/build.py [--variant plain|asan|tsan] [--mutant NAME]

The .cu files are not edited: each is copied into the build folder with its
``kernel<<<grid, block, smem, stream>>>(args)`` launches rewritten to
``::simt::launch(site, kernel, grid, block, smem, stream)(args)`` (line numbers kept, a
``#line`` directive points diagnostics at the original file), and the build fails unless
it rewrote exactly as many launches as the file has ``<<<``. Objects are cached by the
hash of their inputs, so a rebuild after a one-file change compiles one file.

Variants: ``plain`` (-O2), ``asan`` (AddressSanitizer + UndefinedBehaviorSanitizer) and
``tsan`` (ThreadSanitizer: the emulator tells it each CUDA thread is a fiber and which
barriers order them). A ``--mutant`` applies one planted bug from MUTANTS (mutation.py
checks that the emulated suite catches each one).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CSRC = ROOT / "csrc"
SIMT = HERE / "simt"
BUILD = ROOT / "build" / "emu"
LIBRARY_NAME = "libgencore_emu.so"

VARIANT_FLAGS = {
    "plain": ["-O2"],
    "asan": ["-O1", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize=vptr"],
    "tsan": ["-O1", "-fsanitize=thread"],
}

# Planted bugs: (file under csrc/, exact text, replacement). Each must make the emulated
# suite fail (tests/cuda_emulation/mutation.py).
MUTANTS = {
    # The barrier that publishes a D slice of the SIMT tile product to the whole block.
    "removed-syncthreads": (
        "contrastive/contrastive_cuda.cu",
        "        sm.y[c][r] = (b0 + r < ny && d < D) ? static_cast<A>(y[(b0 + r) * D + d]) : A(0);\n"
        "      }\n      __syncthreads();\n",
        "        sm.y[c][r] = (b0 + r < ny && d < D) ? static_cast<A>(y[(b0 + r) * D + d]) : A(0);\n"
        "      }\n",
    ),
    # A barrier that only half of the block reaches.
    "divergent-barrier": (
        "contrastive/contrastive_cuda.cu",
        "    if (tid % kWarp == 0) red[tid / kWarp] = scale_sum;\n    __syncthreads();\n",
        "    if (tid % kWarp == 0) red[tid / kWarp] = scale_sum;\n    if (tid < kThreads / 2) __syncthreads();\n",
    ),
    # A wmma leading dimension that is not a multiple of 16 bytes (36 halves = 72 bytes).
    "bad-wmma-ld": (
        "contrastive/contrastive_cuda.cu",
        "static constexpr int kLd = kK + 8;",
        "static constexpr int kLd = kK + 4;",
    ),
    # The barrier before the tensor-core tile is stored: for D = 0 nothing else keeps the
    # previous tile's readers of sm.out ahead of the next store. No value changes (the
    # emulator runs a warp's store after the other warps' reads): only ThreadSanitizer
    # sees it (mutation.py runs it under the tsan variant).
    "wmma-store-race": (
        "contrastive/contrastive_cuda.cu",
        "    // must be done before it is overwritten.\n    __syncthreads();\n",
        "    // must be done before it is overwritten.\n",
    ),
    # The sigmoid loss's backward gives its positive pairs a negative's weight: the
    # sigmoid(L) - 1 term is lost (SigLIP's gradient then only pushes pairs apart).
    "sigmoid-positive-as-negative": (
        "contrastive/contrastive_cuda.cu",
        "          w = positive ? -coef * dev_sigmoid(-l) : coef * dev_sigmoid(l);",
        "          w = coef * dev_sigmoid(l);",
    ),
    # A code tile that ties the running best replaces it: ties no longer go to the lowest
    # index.
    "vq-tie-to-later-tile": (
        "vq/vq_cuda.cu",
        "      if (v < run_v[r]) {",
        "      if (v <= run_v[r]) {",
    ),
    # The 16 threads of a row combine their pairs over 8 of them only.
    "vq-short-row-reduction": (
        "vq/vq_cuda.cu",
        "      for (int o = kSide / 2; o > 0; o /= 2) {",
        "      for (int o = kSide / 2; o > 1; o /= 2) {",
    ),
    # The learned prior is loaded only for a second sample: with one sample the KL is
    # silently taken against N(0, I).
    "reparam-prior-not-loaded": (
        "reparam/reparam_cuda.cu",
        "      if (kPrior && s == 0) {",
        "      if (kPrior && s == 1) {",
    ),
    # The spline's lanes stride over two warps' worth of elements: half of each segment is
    # never computed (its outputs stay uninitialised, its log-determinant terms missing).
    "spline-lane-stride": (
        "spline/spline_cuda.cu",
        "  for (int64_t j = w.begin + w.lane; j < w.end; j += kWarp) {",
        "  for (int64_t j = w.begin + w.lane; j < w.end; j += 2 * kWarp) {",
    ),
    # The GEMM path adds every chunk's query gradients into the first chunk's rows.
    "gemm-chunk-row-offset": (
        "contrastive/contrastive_cuda.cu",
        "run_split_k<A>(w.split, grad_q_data + r0 * d, rows * d);",
        "run_split_k<A>(w.split, grad_q_data, rows * d);",
    ),
    # The split-K product of the GEMM path forgets the keys left over after its slices
    # (their product is computed but not summed).
    "split-k-remainder-dropped": (
        "contrastive/contrastive_cuda.cu",
        "add_parts<A>(gq, count, p.buf, p.slots * p.halves);",
        "add_parts<A>(gq, count, aten::narrow(p.buf, 0, 0, p.splits), p.splits * p.halves);",
    ),
    # The half types' split-K partials get a buffer of their own instead of the spent
    # logits' storage (right numbers, more memory).
    "split-k-partials-own-buffer": (
        "contrastive/contrastive_cuda.cu",
        "p.buf = spent.defined() && spent.numel() >= p.slots * vrows * d",
        "p.buf = spent.defined() && spent.numel() < 0",
    ),
    # The loss computed beside the gradients (the training path) forgets its positives.
    "fused-loss-positive-as-negative": (
        "contrastive/contrastive_cuda.cu",
        "    if (want_loss) loss += dev_softplus(j == pos ? -l : l);",
        "    if (want_loss) loss += dev_softplus(l);",
    ),
    # The GEMM path gives the tensor cores only the rounded weight (hi), not its remainder.
    "gemm-hi-only": (
        "contrastive/contrastive_cuda.cu",
        "    vv[plane + j] = static_cast<E>(v - static_cast<A>(hi));",
        "    vv[plane + j] = static_cast<E>(0.0f);",
    ),
    # The warp reduction of a coupling segment's log-determinant loses its last step.
    "short-warp-sum": (
        "common/cuda_utils.cuh",
        "for (int o = kWarp / 2; o > 0; o /= 2)",
        "for (int o = kWarp / 2; o > 1; o /= 2)",
    ),
}


class RewriteError(RuntimeError):
    pass


def _match(text: str, start: int, opener: str, closer: str, step: int = 1) -> int:
    """Index of the bracket matching text[start] (`opener` going forward, step 1; `closer`
    going backward, step -1), nesting counted."""
    depth, i = 0, start
    while 0 <= i < len(text):
        if text[i] == opener:
            depth += 1
        elif text[i] == closer:
            depth -= 1
            if depth == 0:
                return i
        i += step
    raise RewriteError(f"unbalanced {text[start]!r} at position {start}")


def _split_top_level(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for c in text:
        if c in "([{<":
            depth += 1
        elif c in ")]}>":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def launch_bounds(text: str) -> dict[str, tuple[str, str]]:
    """kernel name -> (max threads, min blocks) of its __launch_bounds__ ("0" if absent)."""
    out = {}
    for m in re.finditer(r"__launch_bounds__\s*\(", text):
        close = _match(text, m.end() - 1, "(", ")")
        args = _split_top_level(text[m.end():close])
        name = re.match(r"\s*(\w+)", text[close + 1:])
        if not name:
            raise RewriteError("__launch_bounds__ not followed by a kernel name")
        out[name.group(1)] = (args[0], args[1] if len(args) > 1 else "0")
    return out


def rewrite_launches(text: str, path: str) -> tuple[str, int]:
    """Rewrites every `kernel<<<cfg>>>(args)` of a .cu source; returns (text, launches)."""
    expected = text.count("<<<")
    bounds = launch_bounds(text)
    out, pos, count = [], 0, 0
    while True:
        p = text.find("<<<", pos)
        if p < 0:
            break
        # The kernel expression: an identifier (with ::) and its template arguments.
        j = p - 1
        while j >= 0 and text[j].isspace():
            j -= 1
        end = j + 1
        if text[j] == ">":
            j = _match(text, j, ">", "<", step=-1) - 1
        while j >= 0 and (text[j].isalnum() or text[j] in "_:"):
            j -= 1
        start = j + 1
        if start < pos or start == end:
            raise RewriteError(f"{path}: no kernel name before <<< at line {text.count(chr(10), 0, p) + 1}")
        kernel = text[start:end]
        gap1 = text[end:p]
        q = text.find(">>>", p + 3)
        if q < 0:
            raise RewriteError(f"{path}: <<< without >>>")
        config = text[p + 3:q]
        k = q + 3
        while k < len(text) and text[k].isspace():
            k += 1
        if k >= len(text) or text[k] != "(":
            raise RewriteError(f"{path}: no argument list after >>>")
        close = _match(text, k, "(", ")")
        gap2 = text[q + 3:k]
        args = text[k:close + 1]
        name = re.match(r"[\w:]*?(\w+)\s*(<|$)", kernel).group(1)
        max_threads, min_blocks = bounds.get(name, ("0", "0"))
        line = text.count("\n", 0, p) + 1
        label = " ".join(kernel.split()).replace('"', '\\"')
        site = (f'::simt::LaunchSite{{"{path}", {line}, "{label}", static_cast<int>({max_threads}), '
                f"static_cast<int>({min_blocks})}}")
        out.append(text[pos:start])
        # The original newlines stay (gap1, gap2 and those inside the pieces): same lines.
        out.append(f"::simt::launch({site}, {kernel}, {config})"
                   + "".join(c for c in gap1 + gap2 if c == "\n") + args)
        pos = close + 1
        count += 1
    out.append(text[pos:])
    if count != expected:
        raise RewriteError(f"{path}: rewrote {count} launches, the file has {expected} '<<<'")
    return "".join(out), count


def torch_paths() -> tuple[Path, int]:
    import torch

    return Path(torch.__file__).resolve().parent, int(torch._C._GLIBCXX_USE_CXX11_ABI)


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _headers_digest() -> bytes:
    files = sorted([*CSRC.rglob("*.h"), *CSRC.rglob("*.cuh"), *SIMT.rglob("*.h")])
    return _digest(*(f.read_bytes() for f in files)).encode()


def output_dir(variant: str, mutant: str | None) -> Path:
    return BUILD / (variant if mutant is None else f"{variant}-mutant-{mutant}")


def library_path(variant: str = "plain", mutant: str | None = None) -> Path:
    return output_dir(variant, mutant) / LIBRARY_NAME


def build(variant: str = "plain", mutant: str | None = None, jobs: int = 2, verbose: bool = True) -> Path:
    """Builds (or finds up to date) the emulated library; returns its path."""
    torch_dir, abi = torch_paths()
    out = output_dir(variant, mutant)
    objs_dir = BUILD / "objects" / variant
    src_dir = out / "src"
    objs_dir.mkdir(parents=True, exist_ok=True)
    src_dir.mkdir(parents=True, exist_ok=True)
    inc = torch_dir / "include"
    cxx = os.environ.get("CXX", "g++")
    common = ["-std=c++20", "-fPIC", "-fvisibility=hidden", "-fvisibility-inlines-hidden",
              f"-D_GLIBCXX_USE_CXX11_ABI={abi}", "-Wno-unknown-pragmas", "-g1",
              # The stable-ABI target of the real build (CMakeLists.txt: GENCORE_TORCH_TARGET).
              "-DTORCH_TARGET_VERSION=0x020b000000000000",
              *VARIANT_FLAGS[variant]]
    includes = [f"-I{SIMT / 'include'}", f"-I{SIMT}", f"-I{CSRC}", f"-I{inc}"]

    patch = MUTANTS[mutant] if mutant else None
    headers = _headers_digest()
    jobs_list = []  # (source path to compile, extra flags, object path)
    if patch and patch[0].endswith((".h", ".cuh")):
        # A mutated header: the whole csrc tree is copied with the patch applied.
        tree = out / "csrc"
        if tree.exists():
            shutil.rmtree(tree)
        shutil.copytree(CSRC, tree)
        target = tree / patch[0]
        text = target.read_text()
        if patch[1] not in text:
            raise RewriteError(f"mutant {mutant}: text not found in {patch[0]}")
        target.write_text(text.replace(patch[1], patch[2], 1))
        includes[2] = f"-I{tree}"
        headers = _digest(headers, target.read_bytes()).encode()
    # The kernels of csrc/, then the emulator's own probe kernels (test_emulator.py).
    for cu in [*sorted(CSRC.rglob("*.cu")), HERE / "probes.cu"]:
        rel = cu.relative_to(ROOT).as_posix()
        text = cu.read_text()
        if patch and f"csrc/{patch[0]}" == rel:
            if patch[1] not in text:
                raise RewriteError(f"mutant {mutant}: text not found in {rel}")
            text = text.replace(patch[1], patch[2], 1)
        rewritten, _ = rewrite_launches(text, rel)
        src = src_dir / (cu.stem + ".cc")
        src.write_text(f'#line 1 "{rel}"\n' + rewritten)
        flags = ["-include", str(SIMT / "prelude.h")]
        key = _digest(rewritten.encode(), " ".join(common + includes + flags).encode(), headers)
        jobs_list.append((src, flags, objs_dir / f"{cu.stem}-{key}.o"))
    reg = CSRC / "registration.cpp"
    key = _digest(reg.read_bytes(), " ".join(common + includes).encode(), b"registration")
    jobs_list.append((reg, ["-Dgencore=gencore_emu"], objs_dir / f"registration-{key}.o"))
    rt = SIMT / "runtime.cpp"
    key = _digest(rt.read_bytes(), " ".join(common + includes).encode(), headers)
    jobs_list.append((rt, [], objs_dir / f"runtime-{key}.o"))

    def compile_one(job):
        src, flags, obj = job
        if obj.exists():
            return None
        cmd = [cxx, *common, *includes, *flags, "-c", str(src), "-o", str(obj) + ".tmp"]
        if verbose:
            print(f"simt build [{variant}{'/' + mutant if mutant else ''}]: {src.name}", flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            return f"{' '.join(cmd)}\n{r.stderr}"
        os.replace(str(obj) + ".tmp", obj)
        return None

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as ex:
        errors = [e for e in ex.map(compile_one, jobs_list) if e]
    if errors:
        raise RuntimeError("simt build failed:\n" + "\n".join(errors))

    lib = out / LIBRARY_NAME
    objs = [str(j[2]) for j in jobs_list]
    stamp = out / "objects.txt"
    if lib.exists() and stamp.exists() and stamp.read_text() == "\n".join(objs):
        return lib
    sanitize = [f for f in VARIANT_FLAGS[variant] if f.startswith("-fsanitize")]
    cmd = [cxx, "-shared", *sanitize, "-o", str(lib) + ".tmp", *objs, f"-L{torch_dir / 'lib'}",
           "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{torch_dir / 'lib'}", "-Wl,-Bsymbolic"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"simt link failed:\n{' '.join(cmd)}\n{r.stderr}")
    os.replace(str(lib) + ".tmp", lib)
    stamp.write_text("\n".join(objs))
    return lib


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", choices=sorted(VARIANT_FLAGS), default="plain")
    ap.add_argument("--mutant", choices=sorted(MUTANTS))
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    try:
        lib = build(args.variant, args.mutant, args.jobs)
    except (RewriteError, RuntimeError) as e:
        print(e, file=sys.stderr)
        return 1
    print(lib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
