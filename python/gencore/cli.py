"""The ``gencore`` command line.

    gencore --version
    gencore info                 ops, compiled backends, torch / CUDA versions
    gencore bench coupling       fused coupling op vs eager PyTorch and torch.compile
    gencore bench reparam        fused reparameterized sampling + KL, the same way
    gencore bench contrastive    tiled CLIP / NT-Xent losses vs the materialized ones
    gencore bench siglip         the tiled sigmoid (SigLIP) loss, also against open_clip's
    gencore bench vq             tiled nearest-code search and the VQ layer vs one-hot VQ
    gencore bench rq_spline      the fused rational-quadratic spline vs the materialized one, nflows, zuko
    gencore train realnvp --data checkerboard --out runs/rnvp   (default steps and config per model)
    gencore eval runs/rnvp       test NLL (nats), bits/dim, gap to the true entropy
    gencore sample runs/rnvp -n 512 --out samples.png
    gencore train gan --data 8gaussians --out runs/gan
    gencore train vae --data digits --out runs/vae      (also pca, ae, vqvae)
    gencore train simclr --data digits --out runs/simclr
    gencore train clip --data digits-captions --out runs/clip
    gencore train text2image --data digits-captions --out runs/t2i
    gencore sample runs/t2i --caption "bold upright seven" -n 16 --out seven.png
    gencore train realnvp --data my.npy --steps 2000 --out runs/mine   (your own data: .npy, .npz, .csv,
                                 .safetensors or a folder of PNGs; gencore.data.files)
    gencore eval runs/clip       linear probe, kNN, zero-shot, retrieval recall@1/@5 (simclr, clip)
    gencore eval runs/gan        modes covered, MMD^2 vs a collapsed generator (2-D); inception-style
                                 score, train-on-synthetic accuracy, memorization (digits)
    gencore demo                 the README's main job

Errors. Every failure goes through one handler, :func:`main`:

* A user error prints one line, ``gencore: error: <message>``, on stderr and exits with
  status 2 -- no traceback. User errors are the exceptions that describe something the
  caller can fix: bad arguments and bad inputs (:class:`ValueError`, which includes
  :class:`gencore.train.CheckpointError`, :class:`gencore.models.pca.InvalidParameterError`
  and this module's :class:`UsageError`; :class:`TypeError`, raised by the library's
  argument validators -- the price: a TypeError from a bug also reads as a user error, and
  ``--debug`` tells them apart), the file system refusing (any :class:`OSError`:
  ``FileNotFoundError``, ``NotADirectoryError``, ``IsADirectoryError``,
  ``FileExistsError``, ``PermissionError``, a full disk...) and a training run that
  diverged (:class:`FloatingPointError`, "lower lr"). Arguments that argparse rejects
  (unknown command, missing option) use the same ``gencore: error:`` prefix and status 2.
* Anything else (``RuntimeError`` from torch, ``KeyError``, ``AssertionError``...) is an
  internal error, a bug or a resource problem: a short ``gencore: internal error: <type>:
  <message>`` plus a hint to rerun with ``--debug``; status 1.
* ``--debug`` (anywhere on the command line) re-raises instead, so Python prints the full
  traceback. Ctrl-C prints ``gencore: interrupted`` and exits with status 130; a closed
  stdout (``gencore info | head -1``) ends quietly with status 1.

Arguments are checked before any work starts (``--hidden`` sizes, ``-n``, ``--out``
folders that are existing files, ``bench --device cuda`` without CUDA, a ``train`` option
that does not apply to the model: the registry of :mod:`gencore.runs` says which do), and
output paths are reported as written: ``sample --out X`` writes and reports ``X.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: The most samples ``gencore sample`` draws into one PNG: an image grid of 10,000 digits is
#: already ~5,000 pixels on a side (a class-conditional one, 10 columns wide, ~50,000 tall).
MAX_SAMPLES = 10_000

#: Exceptions that describe a mistake the caller can fix; see the module docstring.
USER_ERRORS = (ValueError, TypeError, OSError, FloatingPointError)


class UsageError(ValueError):
    """A command-line argument that is rejected before any work starts."""


def _info() -> dict:
    import torch

    import gencore
    from gencore import _C

    backends = ["cpu"] + (["cuda"] if _C.with_cuda else [])
    ops = {}
    # Every schema of csrc/registration.cpp, as the dispatcher knows it.
    names = sorted(n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("gencore::"))
    for name in names:
        op = getattr(torch.ops.gencore, name).default
        ops[name] = {
            "schema": str(op._schema),
            "kernels": [k for k in ("CPU", "CUDA") if torch._C._dispatch_has_kernel_for_dispatch_key(
                op.name(), k)],
        }
    return {
        "gencore": gencore.__version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "compiled_backends": backends,
        "stable_abi_target": _C.torch_target_version,
        "built_with_torch": _C.built_with_torch,
        "threads": torch.get_num_threads(),
        "ops": ops,
    }


def cmd_info(args) -> int:
    info = _info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"gencore {info['gencore']}  (torch {info['torch']}, CUDA {info['torch_cuda'] or 'none'})")
    print(f"compiled backends: {', '.join(info['compiled_backends'])}; "
          f"{info['threads']} threads; built with torch {info['built_with_torch']} for torch >= "
          f"{info['stable_abi_target']} (stable ABI)")
    print(f"CUDA devices: {', '.join(info['devices']) or 'none'}")
    print("ops:")
    for name, o in info["ops"].items():
        print(f"  {o['schema']}")
        print(f"      kernels: {', '.join(o['kernels'])}")
    return 0


def cmd_bench(args) -> int:
    from gencore.benchmarks import contrastive, coupling, reparam, siglip, spline, vq

    argv = ["--device", args.device, "--dtype", args.dtype]
    if args.quick:
        argv.append("--quick")
    if args.out:
        argv += ["--out", args.out]
    return {"coupling": coupling.main, "reparam": reparam.main, "contrastive": contrastive.main,
            "siglip": siglip.main, "vq": vq.main, "rq_spline": spline.main}[args.op](argv)


def _train_options(args) -> dict:
    """The model options given on the command line (flags left out are None)."""
    from gencore.runs import OPTIONS

    given = {k: getattr(args, k) for k in OPTIONS if getattr(args, k, None) is not None}
    return {k: _sizes(v, OPTIONS[k].flag) if OPTIONS[k].type == "sizes" else v for k, v in given.items()}


def cmd_train(args) -> int:
    from gencore import distributed, runs

    res = runs.train(args.model, args.data, args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                     seed=args.seed, progress=not args.no_progress, allow_changes=args.allow_changes,
                     **_train_options(args))
    if distributed.rank() == 0:  # under torchrun, one report
        print(json.dumps(res, indent=2))
    return 0


def cmd_eval(args) -> int:
    from gencore import runs

    res = runs.evaluate(args.run, args.data)
    print(json.dumps(res, indent=2))
    print(f"wrote {Path(args.run) / 'eval.json'}")
    return 0


def cmd_sample(args) -> int:
    from gencore import runs
    from gencore.runs.common import writes_samples

    # _validate gave --out its suffix: matplotlib writes "X" as "X.png", reported as written.
    path = runs.sample(args.run, args.n, args.out, seed=args.seed, caption=args.caption, candidates=args.candidates)
    print(f"wrote {path}")
    if not writes_samples(args.out):  # a picture: a GAN's figures go beside it
        for extra in runs.figures(args.run, args.out):
            print(f"wrote {extra}")
    return 0


def cmd_demo(args) -> int:
    from gencore import demo

    return demo.main(quick=args.quick, out=args.out)


# ---------------------------------------------------------------------------------------------
# Checks of the arguments, before any work starts.
# ---------------------------------------------------------------------------------------------

def _sizes(text: str, flag: str) -> list[int]:
    """``--hidden 256,256`` as ``[256, 256]``: positive integers, comma-separated."""
    try:
        sizes = [int(v) for v in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or any(v < 1 for v in sizes):
        raise UsageError(f"train: {flag} takes positive integers separated by commas (e.g. 256,256), got {text!r}")
    return sizes


def _dataset(text: str) -> str:
    """``--data``: an embedded dataset's name, or the path of a data file or PNG folder
    (:mod:`gencore.data.files`; whether it exists is checked in :func:`_validate`)."""
    from gencore.data import DATASETS, PAIRED_DATASETS, is_data_path

    if text in DATASETS + PAIRED_DATASETS or is_data_path(text):
        return text
    raise argparse.ArgumentTypeError(
        f"unknown dataset {text!r}: choose from {', '.join(DATASETS + PAIRED_DATASETS)}, or give a data file "
        "(.npy, .npz, .csv, .safetensors) or a folder of PNG images")


def _check_data(data: str, command: str) -> None:
    """``--data PATH`` names something that exists (an embedded name always does)."""
    from gencore.data import DATASETS, PAIRED_DATASETS

    if data not in DATASETS + PAIRED_DATASETS and not Path(data).expanduser().exists():
        raise UsageError(f"{command}: --data {data}: no such data file or folder")


def _check_folder(path, flag: str, command: str) -> None:
    """``path`` can be (or become) a folder: it is not an existing file and no existing
    ancestor of it is a file."""
    if not str(path).strip():  # an unset shell variable: Path("") would be the current folder
        raise UsageError(f"{command}: {flag} is empty; name a folder")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{command}: {flag} {path} exists and is not a folder")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{command}: {flag} {path}: {parent} is a file, not a folder")
            break


def _png_path(path) -> Path:
    """The file ``sample --out`` writes: ``X`` becomes ``X.png`` (as matplotlib would write
    it; ``.npy``, ``.npz``, ``.csv`` and ``.safetensors`` files hold the samples as data); not
    an existing folder, not under a file."""
    path = Path(path)
    if path.is_dir():
        from gencore.runs.common import writes_samples

        example = "samples" + (path.suffix.lower() if writes_samples(path) else ".png")
        raise UsageError(f"sample: --out {path} is a folder; give a file name such as {path / example}")
    if not path.suffix:
        path = path.with_name(path.name + ".png")
    _check_folder(path.parent, "--out", "sample")
    return path


def _check_device(device: str) -> None:
    """``bench --device``: cpu or cuda[:N], and a CUDA device only where one can run gencore's
    kernels."""
    import torch

    try:
        d = torch.device(device)
    except (RuntimeError, ValueError):
        d = None
    if d is None or d.type not in ("cpu", "cuda"):
        raise UsageError(f"bench: --device must be cpu, cuda or cuda:N, got {device!r}")
    if d.type == "cpu":
        return
    from gencore import _C

    if not torch.cuda.is_available():
        why = (f"torch {torch.__version__} is a CPU build" if torch.version.cuda is None
               else f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device")
        raise UsageError(f"bench: --device {device}: CUDA is not available ({why}); use --device cpu")
    if not _C.with_cuda:
        raise UsageError(f"bench: --device {device}: this gencore build has no CUDA kernels (compiled "
                         "backends: cpu); rebuild with GENCORE_CUDA=ON, or use --device cpu")
    if d.index is not None and d.index >= torch.cuda.device_count():
        raise UsageError(f"bench: --device {device}: there are {torch.cuda.device_count()} CUDA devices")


def _validate(args) -> None:
    """Reject bad arguments with a clear message before any work starts."""
    if args.command in ("train", "sample"):
        from gencore import runs

        bound = runs.MAX_SEED if args.command == "train" else runs.MAX_SAMPLE_SEED
        if not 0 <= args.seed <= bound:
            raise UsageError(f"{args.command}: --seed must be in [0, {bound}], got {args.seed}")
    if args.command == "train":
        runs.check_options(runs.get(args.model), _train_options(args))
        _check_data(args.data, "train")
        _check_folder(args.out, "--out", "train")
    elif args.command == "sample":
        from gencore.runs.common import writes_samples

        args.out = str(_png_path(args.out))
        data = writes_samples(args.out)
        most = runs.MAX_DRAWS if data else MAX_SAMPLES
        if not 1 <= args.n <= most:
            where = "one data file" if data else \
                f"one PNG; a .npy, .npz, .csv or .safetensors file takes up to {runs.MAX_DRAWS:,}"
            raise UsageError(f"sample: -n must be between 1 and {most:,} ({where}), got {args.n}")
        if args.candidates < 1:
            raise UsageError(f"sample: --candidates must be a positive int, got {args.candidates}")
        if args.n * args.candidates > runs.MAX_DRAWS:
            raise UsageError(f"sample: -n {args.n} times --candidates {args.candidates} is more than "
                             f"{runs.MAX_DRAWS:,} images")
    if args.command == "eval" and args.data is not None:
        _check_data(args.data, "eval")
    if args.command in ("eval", "sample"):
        run = Path(args.run)
        if not run.is_dir():
            raise UsageError(f"{args.command}: {run} is not a run folder"
                             + ("" if run.exists() else " (it does not exist)"))
    if args.command == "demo":
        _check_folder(args.out, "--out", "demo")
    if args.command == "bench":
        _check_device(args.device)
        if args.out:
            _check_folder(args.out, "--out", "bench")


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's one error format: ``gencore: error: [command: ]message``."""

    def error(self, message):
        self.print_usage(sys.stderr)
        command = self.prog.partition(" ")[2]
        self.exit(2, f"gencore: error: {command + ': ' if command else ''}{message}\n")


def build_parser() -> argparse.ArgumentParser:
    import gencore

    p = _Parser(prog="gencore", description="gencore: fused kernels and models "
                "for unsupervised and generative learning")
    p.add_argument("--version", action="version", version=f"gencore {gencore.__version__}")
    p.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)
    # --debug after the command too; SUPPRESS keeps the top-level value when it is not given.
    debug = _Parser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the Python traceback of an error")

    def command(name, **kwargs):
        return sub.add_parser(name, parents=[debug], **kwargs)

    pi = command("info", help="ops, compiled backends, torch and CUDA versions")
    pi.add_argument("--json", action="store_true", help="machine-readable output")
    pi.set_defaults(fn=cmd_info)

    pb = command("bench", help="benchmark a fused op against eager PyTorch and torch.compile")
    pb.add_argument("op", choices=["coupling", "reparam", "contrastive", "siglip", "vq", "rq_spline"])
    pb.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    pb.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    pb.add_argument("--quick", action="store_true", help="small cases, few repetitions")
    pb.add_argument("--out", default=None, help="folder for CSV and Markdown results")
    pb.set_defaults(fn=cmd_bench)

    from gencore.data import DATASETS, PAIRED_DATASETS
    from gencore.runs import MAX_DRAWS, OPTIONS, REGISTRY, models

    pt = command("train", help="train a model on an embedded dataset or your own data (checkpoints in --out)",
                 description="Train a model into a run folder. Models: " + "; ".join(
                     f"{m}: {REGISTRY[m].summary} (options: "
                     f"{', '.join(OPTIONS[o].flag for o in REGISTRY[m].options) or 'none'})" for m in models()))
    pt.add_argument("model", choices=models())
    pt.add_argument("--data", required=True, type=_dataset, metavar="DATA",
                    help=f"{', '.join(DATASETS + PAIRED_DATASETS)} (digits-captions: image-caption pairs, for "
                    "clip and text2image), or your own data (flows, gan, pca, ae, vae): a .npy, .npz, .csv or .safetensors file or a folder "
                    "of PNG images")
    pt.add_argument("--out", required=True, help="run folder (resumes if it holds a checkpoint of the same run)")
    pt.add_argument("--steps", type=int, default=None,
                    help="optimizer steps (default: the model's, which reaches the documented quality)")
    pt.add_argument("--batch-size", type=int, default=None, help="default: 256 (flows, gan, simclr, clip), "
                    "128 (ae, vae)")
    pt.add_argument("--lr", type=float, default=None, help="default: 1e-3 (flows, simclr, clip), 2e-3 (ae, vae); "
                    "gan: 1e-3 on 2-D data, 5e-4 on images")
    pt.add_argument("--seed", type=int, default=0)
    pt.add_argument("--allow-changes", action="store_true",
                    help="resume a run folder whose checkpoint was trained with other data, options or settings")
    for opt in OPTIONS.values():
        if opt.type is bool:
            pt.add_argument(opt.flag, action="store_true", default=None, help=opt.help)
        else:
            pt.add_argument(opt.flag, type=str if opt.type == "sizes" else opt.type, default=None,
                            choices=opt.choices, help=opt.help)
    pt.add_argument("--no-progress", action="store_true")
    pt.set_defaults(fn=cmd_train)

    pe = command("eval", help="test NLL (nats), bits/dim, gap to the true entropy; for a gan sample "
                 "quality (modes, MMD^2, inception-style score, TSTR, memorization); for simclr / clip "
                 "linear probe, kNN, zero-shot and retrieval; JSON")
    pe.add_argument("run", help="run folder written by `gencore train`")
    pe.add_argument("--data", default=None, type=_dataset, metavar="DATA",
                    help="an embedded dataset or a data file (default: the training dataset)")
    pe.set_defaults(fn=cmd_eval)

    ps = command("sample", help="draw samples into a PNG (image grid or 2-D density plot; for a gan "
                 "also <out>-ipm.png and, for 2-D data, <out>-snapshots.png), or into a .npy, .npz, .csv or "
                 ".safetensors data file")
    ps.add_argument("run")
    ps.add_argument("-n", type=int, default=64, help=f"number of samples, 1 to {MAX_SAMPLES:,} in a PNG, to "
                    f"{MAX_DRAWS:,} in a data file (default: 64)")
    ps.add_argument("--out", required=True, help="PNG file (.png is added to a name without a suffix), or a "
                    ".npy / .npz / .csv / .safetensors file: the samples as data (load_dataset reads them back; "
                    "all but .npy also hold the class of each sample of a conditional model)")
    ps.add_argument("--seed", type=int, default=0)
    ps.add_argument("--caption", default=None, help='text2image: the caption of every image, words of the '
                    'captions\' vocabulary, e.g. "bold upright seven" (default: one column per class)')
    ps.add_argument("--candidates", type=int, default=1,
                    help="text2image: keep the best of this many images per caption by CLIP similarity (default: 1)")
    ps.set_defaults(fn=cmd_sample)

    pd = command("demo", help="show the library working end to end (the README's main job)")
    pd.add_argument("--quick", action="store_true", help="a short smoke run")
    pd.add_argument("--out", default="demo-out", help="folder for results (default: demo-out)")
    pd.set_defaults(fn=cmd_demo)
    return p


def _message(e: BaseException, command: str | None) -> str:
    if isinstance(e, OSError) and e.strerror and e.filename is not None:
        text = f"{e.filename}: {e.strerror}" + (f" ({e.filename2})" if e.filename2 else "")
    else:
        text = str(e) or type(e).__name__
    # The library's own messages often already start with "train: ..." / "sample: ...".
    if command and not text.startswith(f"{command}:"):
        text = f"{command}: {text}"
    return text


def main(argv=None) -> int:
    """Run the command line; returns the exit status (argparse errors raise SystemExit(2))."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    # Known before parsing, so that --debug also covers errors while building the parser.
    debug = "--debug" in argv
    command = None
    try:
        args = build_parser().parse_args(argv)
        command = args.command
        if command == "bench" and args.device is None:
            import torch

            from gencore import _C

            args.device = "cuda" if torch.cuda.is_available() and _C.with_cuda else "cpu"
        _validate(args)
        return args.fn(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("gencore: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (`gencore info | head -1`): nothing to report
        import os

        try:  # no second error when Python flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # a stdout without a file descriptor
            pass
        return 1
    except USER_ERRORS as e:
        if debug:
            raise
        print(f"gencore: error: {_message(e, command)}", file=sys.stderr)
        return 2
    except Exception as e:  # an internal error: a bug, or a resource such as memory running out
        if debug:
            raise
        print(f"gencore: internal error: {type(e).__name__}: {_message(e, command)}", file=sys.stderr)
        print("gencore: rerun with --debug for the traceback (and report it if the arguments were valid)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
