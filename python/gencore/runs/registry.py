"""The registry of model families: what ``gencore train / eval / sample`` can run.

Each model is a :class:`ModelSpec`: the datasets it trains on, the options it accepts
(:data:`OPTIONS`), its default training length, and its train / evaluate / sample
functions. The command line builds its ``train`` flags from :data:`OPTIONS` and asks the
registry which apply to a model (:func:`check_options`); the demo and the examples call the
same :func:`gencore.runs.train` / :func:`gencore.runs.evaluate`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Option:
    """A model option: its keyword (``--flag-name`` on the command line), its type
    (``int``, ``float``, ``str``, ``bool`` or ``"sizes"``: positive integers) and help."""

    name: str
    type: object
    help: str
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


#: Every model option the runs know, in the order of ``gencore train --help``.
OPTIONS: dict[str, Option] = {o.name: o for o in (
    Option("couplings", int, "coupling layers (per stage for images; steps per level for glow; the "
                             "autoregressive layers of nsf --autoregressive)"),
    Option("hidden", "sizes", "hidden widths, e.g. 256,256 (conditioners; the networks of gan, ae, vae; "
                              "the image encoder of simclr, clip)"),
    Option("latent_dim", int, "size of z (gan, ae, vae), components (pca; default: chosen on the val split)"),
    Option("latent_dims", "sizes", "hvae: sizes of the stochastic layers, z_1 (next to the data) first, e.g. 16,8"),
    Option("conditional", bool, "condition on the class (labels 0..9)"),
    Option("image", bool, "image data as (C, H, W) with convolutional networks (digits: (1, 8, 8))"),
    Option("loss", str, "gan: the game's loss (default: non_saturating on 2-D data, wasserstein_gp on images); "
                        "clip: softmax (CLIP's, the default) or siglip (the sigmoid loss)",
           ("non_saturating", "wasserstein_gp", "hinge", "softmax", "siglip")),
    Option("n_critic", int, "gan: discriminator updates per generator update (default: 5 for wasserstein_gp)"),
    Option("gp_weight", float, "gan: gradient penalty weight (wasserstein_gp)"),
    Option("r1_weight", float, "gan: R1 penalty weight on real data"),
    Option("spectral_norm", bool, "gan: spectral norm in the critic"),
    Option("ema", float, "gan: EMA decay of the generator used for sampling"),
    Option("num_codes", int, "vqvae: codebook size K (a digit is a 4 x 4 grid of codes: 16 log2 K bits)"),
    Option("autoregressive", bool, "nsf: the autoregressive (MADE) form instead of couplings (sampling takes D passes "
                                   "per layer)"),
    Option("no_restart", bool, "vqvae: no dead-code restarts (to measure the codebook collapse they prevent)"),
)}


@dataclass(frozen=True)
class ModelSpec:
    """One model of the registry.

    Attributes:
        name: the model's name (``gencore train NAME``; a key of :data:`gencore.models.MODELS`).
        family: ``"flow"``, ``"gan"``, ``"latent"``, ``"contrastive"`` or ``"multimodal"``.
        summary: one line for ``--help``.
        datasets: the embedded datasets it trains on.
        user_data: whether it trains on your own data (``--data PATH``).
        options: the keys of :data:`OPTIONS` it accepts.
        batch_size: default minibatch size.
        default_steps: ``(data_kind, options) -> steps`` when ``--steps`` is not given; the
            values reach the quality the docs report (docs/cli.md). None for a model fitted
            in closed form (pca), which takes no ``--steps``.
        train: ``(spec, data, out, *, steps, batch_size, lr, seed, progress, allow_changes,
            **options) -> summary dict``. ``steps`` is None when ``--steps`` was not given for
            your own vectors (the default depends on their values): the family reads the data
            once (:func:`gencore.data.files.read_once`) and takes
            :func:`gencore.runs.common.steps_for`.
        evaluate: ``(run, model, meta, data) -> dict`` (written to ``run/eval.json``).
        sample: ``(run, model, meta, n, out_png, generator) -> Path``, or None (no generator).
        figures: ``(run, meta, out_png) -> [Path]``: extra figures beside the samples.
    """

    name: str
    family: str
    summary: str
    datasets: tuple[str, ...]
    user_data: bool
    options: tuple[str, ...]
    batch_size: int
    default_steps: Callable[[str, dict], int] | None
    train: Callable = field(repr=False)
    evaluate: Callable = field(repr=False)
    sample: Callable | None = field(default=None, repr=False)
    figures: Callable | None = field(default=None, repr=False)


REGISTRY: dict[str, ModelSpec] = {}


FAMILIES = ("flow", "gan", "latent", "contrastive", "multimodal")


def models() -> list[str]:
    """The registered models, family by family (the order of ``gencore train --help``)."""
    return sorted(REGISTRY, key=lambda m: FAMILIES.index(REGISTRY[m].family))


def register(spec: ModelSpec) -> ModelSpec:
    unknown = set(spec.options) - set(OPTIONS)
    if unknown or spec.family not in FAMILIES:
        raise ValueError(f"{spec.name}: unknown options {sorted(unknown)} or family {spec.family!r}")
    REGISTRY[spec.name] = spec
    return spec


def get(model: str) -> ModelSpec:
    """The spec of ``model``; a ``ValueError`` listing the registered models otherwise."""
    if model not in REGISTRY:
        raise ValueError(f"unknown model {model!r}: choose from {', '.join(REGISTRY)}")
    return REGISTRY[model]


def check_options(spec: ModelSpec, options: dict, command: str = "train") -> None:
    """One clear error for an option the model does not take (the first, by flag name)."""
    for key in options:
        if key not in OPTIONS:
            raise ValueError(f"{command}: unknown option {key!r}; the options are {', '.join(OPTIONS)}")
        if key not in spec.options:
            accepted = ", ".join(OPTIONS[k].flag for k in spec.options) or "none"
            raise ValueError(f"{command}: {OPTIONS[key].flag} does not apply to {spec.name} "
                             f"({spec.name}'s options: {accepted})")
        if OPTIONS[key].type is bool and not isinstance(options[key], bool):
            # (the Python API: a string "false" or a 0 would otherwise be read by its truth value)
            raise TypeError(f"{command}: {key} must be a bool, got {type(options[key]).__name__} {options[key]!r}")
        _check_range(key, options[key], command)


def _check_range(key: str, value, command: str) -> None:
    """Counts and sizes within the bounds :func:`gencore.models.build` puts on a config,
    named by their flag (``--couplings`` sets ``n_couplings`` or, for glow, ``steps``)."""
    from gencore._arguments import check_int, check_widths
    from gencore.models import MAX_CONFIG_INT, MAX_DEPTH

    opt = OPTIONS[key]
    name = f"{command}: {opt.flag}"
    if opt.type is int:
        check_int(value, name, 1, MAX_DEPTH if key == "couplings" else MAX_CONFIG_INT)
    elif opt.type == "sizes":
        for i, v in enumerate(check_widths(value, name)):  # one int: one width (Python)
            check_int(v, f"{name}[{i}]", 1, MAX_CONFIG_INT)


__all__ = ["Option", "OPTIONS", "ModelSpec", "REGISTRY", "FAMILIES", "models", "register", "get", "check_options"]
