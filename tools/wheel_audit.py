"""Audits a built gencore wheel: what it imports from torch, what it links, its tag.

    python tools/wheel_audit.py dist/gencore-*.whl [--cuda]

Checks, and exits 1 when one fails:
- the compiled extension (gencore/_C.abi3.so) imports no C++ symbol of libtorch / c10
  (``at::``, ``c10::``, ``torch::``): only the C functions of torch's stable shim, so the
  wheel loads in every torch from its stable-ABI target on. The optional version-locked
  fast path gencore/_C_autograd.so (C++ autograd of the coupling ops) does use libtorch's
  C++ API; python/gencore/ops/coupling.py loads it only under the torch it was built
  against, and it is reported, not counted;
- it links no OpenMP runtime of its own (threads come from torch's parallel_for);
- its RUNPATH entries are relative to ``$ORIGIN`` (no path of the build machine);
- the wheel tag is ``cp310-abi3-manylinux_*`` and the metadata requires ``torch>=2.11``;
- with ``--cuda``: the library has CUDA kernels (it links libtorch_cuda).
Prints the findings as JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def audit(wheel: Path, cuda: bool) -> tuple[dict, list[str]]:
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp)
        libs = sorted(Path(tmp).glob("gencore/_C*.abi3.so"))
        if len(libs) != 1:
            return {}, [f"expected one gencore/_C*.abi3.so in the wheel, found {[p.name for p in libs]}"]
        lib = libs[0]
        locked = Path(tmp) / "gencore" / "_C_autograd.so"
        undefined = [line.split()[-1] for line in _run("nm", "-D", "--undefined-only", str(lib)).splitlines()
                     if line.strip()]
        demangled = _run("c++filt", *undefined).splitlines() if undefined else []
        cxx_torch = sorted(s for s in demangled if re.match(r"(at|c10|torch)::", s))
        shim = sorted(s for s in undefined if s.startswith(("aoti_torch_", "torch_")))
        dynamic = _run("readelf", "-d", str(lib))
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dynamic)
        runpath = re.findall(r"\((?:RUNPATH|RPATH)\)\s+Library (?:runpath|rpath): \[(.+?)\]", dynamic)
        runpath = [p for entry in runpath for p in entry.split(":")]
        vendored = sorted(p.name for p in Path(tmp).rglob("*.so*") if p not in (lib, locked))
        locked_needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]",
                                   _run("readelf", "-d", str(locked))) if locked.exists() else []
        metadata = next(Path(tmp).glob("*.dist-info/METADATA")).read_text()
    requires_torch = re.findall(r"^Requires-Dist: torch\s*([^;\n]*)", metadata, re.M)
    tag = wheel.name.removesuffix(".whl").split("-", 2)[2]
    if cxx_torch:
        problems.append(f"{len(cxx_torch)} C++ symbols of libtorch/c10 imported, e.g. {cxx_torch[:3]}")
    omp = [n for n in needed if re.match(r"lib(g|i)?omp", n)]
    if omp:
        problems.append(f"links an OpenMP runtime of its own: {omp}")
    bad_paths = [p for p in runpath if not p.startswith("$ORIGIN")]
    if bad_paths:
        problems.append(f"RUNPATH entries not relative to $ORIGIN: {bad_paths}")
    if not re.fullmatch(r"cp310-abi3-manylinux_\d+_\d+_x86_64(\.manylinux_\d+_\d+_x86_64)*", tag):
        problems.append(f"wheel tag {tag!r} is not cp310-abi3-manylinux_*_x86_64")
    if not requires_torch or ">=2.11" not in requires_torch[0].replace(" ", ""):
        problems.append(f"metadata does not require torch>=2.11: {requires_torch}")
    if cuda and not any(n.startswith("libtorch_cuda") for n in needed):
        problems.append(f"--cuda: the library does not link libtorch_cuda (NEEDED: {needed})")
    report = {
        "wheel": wheel.name,
        "tag": tag,
        "cxx_torch_symbols": len(cxx_torch),
        "torch_c_shim_symbols": len(shim),
        "needed": needed,
        "runpath": runpath,
        "vendored_libraries": vendored,
        "version_locked_fast_path": {"file": locked.name, "needed": locked_needed} if locked_needed else None,
        "requires_torch": requires_torch,
    }
    return report, problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wheel", type=Path)
    ap.add_argument("--cuda", action="store_true", help="the wheel must carry CUDA kernels")
    args = ap.parse_args(argv)
    report, problems = audit(args.wheel, args.cuda)
    print(json.dumps(report, indent=2))
    for p in problems:
        print(f"wheel_audit: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
