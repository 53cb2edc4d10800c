"""The ``gencore`` command line.

    gencore --version
    gencore info                 ops, compiled backends, torch / CUDA versions
    gencore bench coupling       fused coupling op vs eager PyTorch and torch.compile
    gencore bench reparam        fused reparameterized sampling + KL, the same way
    gencore bench contrastive    tiled CLIP / NT-Xent losses vs the materialized ones
    gencore train realnvp --data 8gaussians --steps 5000 --out runs/rnvp
    gencore eval runs/rnvp       test NLL (nats), bits/dim, gap to the true entropy
    gencore sample runs/rnvp -n 512 --out samples.png
    gencore train gan --data 8gaussians --steps 2000 --out runs/gan
    gencore train vae --data digits --steps 4000 --out runs/vae      (also pca, ae)
    gencore train simclr --data digits --steps 2000 --out runs/simclr
    gencore train clip --data digits-captions --steps 1500 --out runs/clip
    gencore eval runs/clip       linear probe, kNN, zero-shot, retrieval recall@1/@5 (simclr, clip)
    gencore eval runs/gan        modes covered, MMD^2 vs a collapsed generator (2-D); inception-style
                                 score, train-on-synthetic accuracy, memorization (digits)
    gencore demo                 the README's main job
"""

from __future__ import annotations

import argparse
import json
import sys


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
    from gencore.benchmarks import contrastive, coupling, reparam

    argv = ["--device", args.device, "--dtype", args.dtype]
    if args.quick:
        argv.append("--quick")
    if args.out:
        argv += ["--out", args.out]
    return {"coupling": coupling.main, "reparam": reparam.main, "contrastive": contrastive.main}[args.op](argv)


def cmd_train(args) -> int:
    from gencore import tasks

    hidden = [int(v) for v in args.hidden.split(",")] if args.hidden else None
    gan_args = {"loss": args.loss, "n_critic": args.n_critic, "latent_dim": args.latent_dim,
                "gp_weight": args.gp_weight, "r1_weight": args.r1_weight, "spectral_norm": args.spectral_norm,
                "ema_decay": args.ema}
    gan_args = {k: v for k, v in gan_args.items() if v is not None}
    # --latent-dim also sets the latent size of pca / ae / vae; the other GAN flags are GAN-only.
    gan_only = [k for k in gan_args if not (k == "latent_dim" and args.model in tasks.LATENT_MODELS)]
    if gan_only and args.model not in tasks.GAN_MODELS:
        raise ValueError(f"--{gan_only[0].replace('_', '-')} applies to gan only")
    res = tasks.train_model(args.model, args.data, steps=args.steps, out=args.out,
                            batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                            conditional=args.conditional, image=args.image,
                            progress=not args.no_progress, depth=args.couplings, hidden=hidden, **gan_args)
    from gencore import distributed

    if distributed.rank() == 0:  # under torchrun, one report
        print(json.dumps(res, indent=2))
    return 0


def cmd_eval(args) -> int:
    from gencore import tasks

    res = tasks.evaluate(args.run, args.data)
    print(json.dumps(res, indent=2))
    print(f"written to {args.run}/eval.json")
    return 0


def cmd_sample(args) -> int:
    from gencore import tasks

    path = tasks.sample(args.run, args.n, args.out, seed=args.seed)
    print(f"wrote {path}")
    for extra in tasks.training_figures(args.run, args.out):
        print(f"wrote {extra}")
    return 0


def cmd_demo(args) -> int:
    from gencore import demo

    return demo.main(quick=args.quick, out=args.out)


def build_parser() -> argparse.ArgumentParser:
    import gencore

    p = argparse.ArgumentParser(prog="gencore", description="gencore: fused kernels and models "
                                "for unsupervised and generative learning")
    p.add_argument("--version", action="version", version=f"gencore {gencore.__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    pi = sub.add_parser("info", help="ops, compiled backends, torch and CUDA versions")
    pi.add_argument("--json", action="store_true", help="machine-readable output")
    pi.set_defaults(fn=cmd_info)

    pb = sub.add_parser("bench", help="benchmark a fused op against eager PyTorch and torch.compile")
    pb.add_argument("op", choices=["coupling", "reparam", "contrastive"])
    pb.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    pb.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    pb.add_argument("--quick", action="store_true", help="small cases, few repetitions")
    pb.add_argument("--out", default=None, help="folder for CSV and Markdown results")
    pb.set_defaults(fn=cmd_bench)

    from gencore.data import DATASETS, PAIRED_DATASETS
    from gencore.tasks import CONTRASTIVE_MODELS, FLOW_MODELS, GAN_MODELS, LATENT_MODELS

    pt = sub.add_parser("train", help="train a model on an embedded dataset (checkpoints in --out)")
    pt.add_argument("model", choices=FLOW_MODELS + GAN_MODELS + LATENT_MODELS + CONTRASTIVE_MODELS)
    pt.add_argument("--data", required=True, choices=DATASETS + PAIRED_DATASETS,
                    help="digits-captions (image-caption pairs) is for clip")
    pt.add_argument("--steps", type=int, required=True)
    pt.add_argument("--out", required=True, help="run folder (resumes if it holds a checkpoint)")
    pt.add_argument("--batch-size", type=int, default=256)
    pt.add_argument("--lr", type=float, default=None, help="default: 1e-3 (flows); gan: 1e-3 on 2-D toys, 5e-4 on digits")
    pt.add_argument("--seed", type=int, default=0)
    pt.add_argument("--couplings", type=int, default=None,
                    help="coupling layers (per stage for images; steps per level for glow)")
    pt.add_argument("--hidden", default=None, help="conditioner hidden sizes, e.g. 256,256 (simclr, clip: the "
                    "image encoder's widths)")
    pt.add_argument("--conditional", action="store_true", help="condition on the class (digits)")
    pt.add_argument("--image", action="store_true", help="digits as (1, 8, 8) images (realnvp, glow, gan)")
    pt.add_argument("--loss", default=None, choices=["non_saturating", "wasserstein_gp", "hinge"],
                    help="gan: the game's loss (default: non_saturating on 2-D toys, wasserstein_gp on digits)")
    pt.add_argument("--n-critic", type=int, default=None, help="gan: discriminator updates per generator update")
    pt.add_argument("--latent-dim", type=int, default=None, help="gan, pca, ae, vae: size of z")
    pt.add_argument("--gp-weight", type=float, default=None, help="gan: gradient penalty weight (wasserstein_gp)")
    pt.add_argument("--r1-weight", type=float, default=None, help="gan: R1 penalty weight on real data")
    pt.add_argument("--spectral-norm", action="store_true", default=None, help="gan: spectral norm in the critic")
    pt.add_argument("--ema", type=float, default=None, help="gan: EMA decay of the generator used for sampling")
    pt.add_argument("--no-progress", action="store_true")
    pt.set_defaults(fn=cmd_train)

    pe = sub.add_parser("eval", help="test NLL (nats), bits/dim, gap to the true entropy; for a gan sample "
                        "quality (modes, MMD^2, inception-style score, TSTR, memorization); for simclr / clip "
                        "linear probe, kNN, zero-shot and retrieval; JSON")
    pe.add_argument("run", help="run folder written by `gencore train`")
    pe.add_argument("--data", default=None, choices=DATASETS + PAIRED_DATASETS, help="default: the training dataset")
    pe.set_defaults(fn=cmd_eval)

    ps = sub.add_parser("sample", help="draw samples into a PNG (image grid or 2-D density plot); for a gan "
                        "also <out>-ipm.png and, for 2-D data, <out>-snapshots.png")
    ps.add_argument("run")
    ps.add_argument("-n", type=int, default=64)
    ps.add_argument("--out", required=True, help="PNG file")
    ps.add_argument("--seed", type=int, default=0)
    ps.set_defaults(fn=cmd_sample)

    pd = sub.add_parser("demo", help="show the library working end to end (the README's main job)")
    pd.add_argument("--quick", action="store_true", help="a short smoke run")
    pd.add_argument("--out", default="demo-out", help="folder for results (default: demo-out)")
    pd.set_defaults(fn=cmd_demo)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "device", "x") is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return args.fn(args)
    except (ValueError, TypeError, FileNotFoundError, FloatingPointError) as e:
        print(f"gencore {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
