"""PNG figures: image grids of samples, used by the demo and the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import torch


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> Path:
    """Lay out, write (creating folders) and close a matplotlib figure."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    pyplot().close(fig)
    return path


def save_image_grid(images, path, *, nrow: int | None = None, title: str | None = None,
                    shape=(8, 8), row_labels=None) -> Path:
    """Save images in ``[0, 1]`` as a grid PNG: ``(N, H, W)``, ``(N, C, H, W)`` with ``C`` 1
    (gray, drawn dark on white) or 3 (RGB), or flat ``(N, C*H*W)`` with ``shape`` ``(H, W)``
    or ``(C, H, W)``.

    Values are clipped to ``[0, 1]`` for display only. ``nrow`` images per grid row;
    ``row_labels``: one text per grid row, written to its left (e.g. the caption a row of
    images was drawn for).
    """
    x = torch.as_tensor(images).detach().float().cpu()
    if x.dim() == 2:
        shape = tuple(shape)
        if len(x) == 0 or math.prod(shape) != x.shape[1]:
            raise ValueError(f"images: (N, {x.shape[1]}) vectors are not images of shape {shape}")
        x = x.reshape(len(x), *shape)
    if x.dim() == 3:
        x = x[:, None]
    if x.dim() != 4 or x.shape[1] not in (1, 3) or len(x) == 0:
        raise ValueError(f"images must be (N, H, W) or (N, C, H, W) with C = 1 or 3 (or flat), got {tuple(x.shape)}")
    n, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    # White gutters: 0 under gray_r (gray images are drawn dark on white), 1 in RGB.
    canvas = torch.full((c, ncol * (h + 1) + 1, nrow * (w + 1) + 1), 0.0 if c == 1 else 1.0)
    for i in range(n):
        r, col = divmod(i, nrow)
        canvas[:, 1 + r * (h + 1):1 + r * (h + 1) + h, 1 + col * (w + 1):1 + col * (w + 1) + w] = x[i].clamp(0, 1)
    plt = pyplot()
    extra = 1.6 if row_labels is not None else 0.0
    fig, ax = plt.subplots(figsize=(nrow * 0.45 + 0.3 + extra, ncol * 0.45 + (0.5 if title else 0.3)), dpi=110)
    if c == 1:
        ax.imshow(canvas[0].numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(canvas.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.axis("off")
    if row_labels is not None:
        labels = [str(v) for v in row_labels]
        if len(labels) != ncol:
            raise ValueError(f"row_labels: {len(labels)} labels for {ncol} rows of images")
        for r, text in enumerate(labels):
            ax.text(-1, 1 + r * (h + 1) + h / 2, text, ha="right", va="center", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def save_density_scatter(points, path, *, density, true_density=None, title=None,
                         extent=None, resolution: int = 200) -> Path:
    """2-D samples as dots over a heat map of ``density(points) -> (N,)`` (the model's), with
    the true density beside it when ``true_density`` is given."""
    x = torch.as_tensor(points).detach().double().cpu()
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"points must be (N, 2), got {tuple(x.shape)}")
    if extent is None:
        lo, hi = x.quantile(0.005, 0).min().item(), x.quantile(0.995, 0).max().item()
        pad = 0.15 * (hi - lo)
        extent = (lo - pad, hi + pad)
    g = torch.linspace(extent[0], extent[1], resolution, dtype=torch.float64)
    gx, gy = torch.meshgrid(g, g, indexing="xy")
    grid = torch.stack([gx.flatten(), gy.flatten()], 1)
    maps = [("model density + samples", density(grid).reshape(resolution, resolution))]
    if true_density is not None:
        maps.append(("true density", true_density(grid).reshape(resolution, resolution)))
    plt = pyplot()
    fig, axes = plt.subplots(1, len(maps), figsize=(4 * len(maps), 4), dpi=110, squeeze=False)
    for ax, (name, m) in zip(axes[0], maps):
        ax.imshow(m.detach().cpu().numpy(), origin="lower", extent=(*extent, *extent), cmap="magma")
        if name.startswith("model"):
            ax.scatter(x[:, 0], x[:, 1], s=2, c="cyan", alpha=0.5)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(*extent)
        ax.set_ylim(*extent)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


# --- 2-D samples and a GAN's training curves -------------------------------------------------

def _scatter(ax, xs, data, extent, size=2):
    if data is not None:
        ax.scatter(data[:, 0], data[:, 1], s=1, c="0.75", alpha=0.5, label="held-out data")
    ax.scatter(xs[:, 0], xs[:, 1], s=size, c="tab:red", alpha=0.5, label="samples")
    ax.set_xlim(*extent)
    ax.set_ylim(*extent)
    ax.set_aspect("equal")


def _extent(*arrays):
    pts = torch.cat([torch.as_tensor(a).double().reshape(-1, 2) for a in arrays if a is not None])
    lo, hi = pts.quantile(0.002, 0).min().item(), pts.quantile(0.998, 0).max().item()
    pad = 0.1 * (hi - lo)
    return (lo - pad, hi + pad)


def save_scatter_over_data(samples, path, *, data=None, title: str | None = None) -> Path:
    """2-D samples ``(N, 2)`` (red) over data ``(M, 2)`` (grey) as a PNG."""
    xs = torch.as_tensor(samples).detach().double().cpu()
    if xs.dim() != 2 or xs.shape[1] != 2:
        raise ValueError(f"samples must be (N, 2), got {tuple(xs.shape)}")
    fig, ax = pyplot().subplots(figsize=(4.5, 4.5), dpi=110)
    _scatter(ax, xs, data, _extent(xs, data))
    ax.legend(loc="upper right", fontsize=7, markerscale=4)
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def save_snapshots(snapshots: dict, path, *, data=None, max_panels: int = 6) -> Path:
    """Samples at several training steps ``{step: (N, 2)}``, one panel each (at most
    ``max_panels``, evenly spaced, the last always included)."""
    steps = sorted(snapshots)
    if not steps:
        raise ValueError("no snapshots to plot")
    if len(steps) > max_panels:
        idx = torch.linspace(0, len(steps) - 1, max_panels).round().long().tolist()
        steps = [steps[i] for i in idx]
    ext = _extent(data, *(snapshots[s] for s in steps))
    fig, axes = pyplot().subplots(1, len(steps), figsize=(2.4 * len(steps), 2.6), dpi=110, squeeze=False)
    for ax, s in zip(axes[0], steps):
        _scatter(ax, torch.as_tensor(snapshots[s]).double(), data, ext, size=1)
        ax.set_title(f"step {s}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    return save_figure(fig, path)


def save_ipm_history(histories: dict, path, *, title: str | None = None) -> Path:
    """The critic's IPM estimate ``E_p f - E_q f`` against training steps, one panel per run
    ``{label: fit history}``: on held-out data at each evaluation (``eval_loss``) and the
    running mean over the training steps since the previous one (``train_ipm``)."""
    fig, axes = pyplot().subplots(1, len(histories), figsize=(4.2 * len(histories), 3.2), dpi=110, squeeze=False)
    for ax, (label, hist) in zip(axes[0], histories.items()):
        steps = [h["step"] for h in hist]
        if any("train_ipm" in h for h in hist):
            ax.plot(steps, [h.get("train_ipm", math.nan) for h in hist], "--", label="training batches")
        if any("eval_loss" in h for h in hist):
            ax.plot(steps, [h.get("eval_loss", math.nan) for h in hist], "o-", ms=3, label="held-out data")
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set_xlabel("step")
        ax.set_ylabel("critic's E_p f - E_q f")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
