"""Figures: curves, heat maps and image grids in notebooks (grids as PNG files without matplotlib: :mod:`minitune.images`)."""

from __future__ import annotations

import textwrap

import numpy as np

from ..images import to_uint8


def plot_training_curve(loss_csv, path=None, smooth: int = 25):
    """Plot a training log (step, loss, ...) with a moving average; save to `path` if given."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.genfromtxt(loss_csv, delimiter=",", names=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(data["step"], data["loss"], lw=0.5, alpha=0.4, label="loss")
    if len(data) >= smooth:
        ma = np.convolve(data["loss"], np.ones(smooth) / smooth, mode="valid")
        ax.plot(data["step"][smooth - 1 :], ma, label=f"moving average ({smooth})")
    ax.set(xlabel="step", ylabel="ε-prediction MSE", yscale="log", title="Shapes base model training")
    ax.legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig


# The book's text column in inches: a wider figure is shrunk to it, and its text with it, so grids are laid out
# to fit it and their text stays at least 9 pt on the page
COLUMN_WIDTH = 7.5


def show_grid(images, titles=None, cols: int = 8, size: float = 1.4, fontsize: int = 9):
    """A matplotlib figure of images with optional titles (e.g. prompt and the oracle's verdict), at most
    :data:`COLUMN_WIDTH` wide (the images shrink to fit, the titles keep their size)."""
    import matplotlib.pyplot as plt

    images = to_uint8(images)
    rows = -(-len(images) // cols)
    size = min(size, COLUMN_WIDTH / cols)
    lines = max((str(t).count("\n") + 1 for t in titles), default=0) if titles is not None else 0
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * (size + 0.18 * lines + 0.05)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i], interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=fontsize)
    fig.tight_layout()
    return fig


def plot_category_bars(summaries: dict, metric: str = "strict", path=None):
    """Grouped bars: `metric` (%) per category for each model, with the 95 % CI as error bars.

    summaries: model name -> :meth:`minitune.evaluate.EvalResult.summary`.
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summaries)
    cats = [c for c in next(iter(summaries.values())) if all(c in s for s in summaries.values())]
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(1.3 * len(cats) + 2, 3.5))
    for i, name in enumerate(names):
        s = summaries[name]
        y = np.array([100 * s[c][metric] for c in cats])
        ci = np.array([[100 * s[c][metric + "_ci"][0] for c in cats], [100 * s[c][metric + "_ci"][1] for c in cats]])
        ax.bar(np.arange(len(cats)) + (i - (len(names) - 1) / 2) * width, y, width, label=name,
               yerr=np.abs(ci - y), capsize=2)
    ax.set_xticks(np.arange(len(cats)), cats)
    ax.set(ylabel=f"{metric} alignment %", ylim=(0, 100))
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig


def plot_model_grid(images: dict, path=None, n: int = 6, titles=None):
    """One column per model and one row per prompt, the same seeds across a row (`n` images spread evenly
    over the first model's); `titles` (one per image, e.g. its prompt) label the rows."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = to_uint8(next(iter(images.values())))
    rows = np.linspace(0, len(first) - 1, min(n, len(first))).round().astype(int)
    label = 2.1 if titles is not None else 0.0  # inches for the row labels
    cell = min(1.0, (COLUMN_WIDTH - label) / len(images))
    fig, axes = plt.subplots(len(rows), len(images), figsize=(label + cell * len(images), (cell + 0.05) * len(rows) + 0.4),
                             squeeze=False)
    for c, (name, ims) in enumerate(images.items()):
        ims = to_uint8(ims)
        axes[0, c].set_title(textwrap.fill(name, 14), fontsize=9)
        for r, i in enumerate(rows):
            axes[r, c].imshow(ims[i], interpolation="nearest")
            axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
    if titles is not None:
        for r, i in enumerate(rows):
            axes[r, 0].set_ylabel(textwrap.fill(titles[i], 24), fontsize=9, rotation=0, ha="right", va="center")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig


def show_maps(maps, images=None, row_titles=None, col_titles=None, size: float = 1.3, fontsize: int = 7,
              cmap: str = "magma"):
    """Heat maps [B, K, H, W] as a figure, one row per image and one column per map (e.g.
    :func:`minitune.mi.mi_pixel_map` at K noise levels); with ``images`` each row starts with its image.
    Every map has its own colour scale, so the figure shows where, not how much."""
    import matplotlib.pyplot as plt

    maps = np.asarray(maps.detach().float().cpu() if hasattr(maps, "detach") else maps, float)
    if maps.ndim != 4:
        raise ValueError(f"maps must be [B, K, H, W], got shape {maps.shape}; add the missing dimensions with [None].")
    lead = images is not None
    b, k = maps.shape[:2]
    fig, axes = plt.subplots(b, k + lead, figsize=((k + lead) * size, b * (size + 0.2)), squeeze=False)
    for r in range(b):
        if lead:
            axes[r, 0].imshow(to_uint8(images[r : r + 1])[0], interpolation="nearest")
        for c in range(k):
            axes[r, c + lead].imshow(maps[r, c], cmap=cmap, interpolation="nearest")
        if row_titles is not None:
            axes[r, 0].set_ylabel(row_titles[r], fontsize=fontsize)
    for c, title in enumerate(col_titles or []):
        axes[0, c + lead].set_title(title, fontsize=fontsize)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_arm_deltas(arms: dict, path=None, title: str | None = None):
    """Horizontal bars: each arm's paired change in strict alignment vs the base (points), with its 95 % CI.

    arms: an experiment's published ``"arms"`` ({arm: {"name", "delta_strict", "delta_ci", ...}}).
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for arm, r in arms.items() if arm != "base"]
    y = np.arange(len(rows))[::-1]
    d = np.array([100 * r["delta_strict"] for r in rows])
    ci = np.array([[100 * r["delta_ci"][0] for r in rows], [100 * r["delta_ci"][1] for r in rows]])
    fig, ax = plt.subplots(figsize=(6.5, 0.55 * len(rows) + 1.2))
    ax.barh(y, d, xerr=np.abs(ci - d), capsize=3, color=["tab:green" if lo > 0 else "tab:gray" for lo in ci[0]])
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, [r["name"] for r in rows], fontsize=10)
    ax.set_xlabel("Δ strict alignment vs the base (points, 95 % CI over prompts)", fontsize=10)
    if title:
        ax.set_title(title, fontsize=11)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=150)
        plt.close(fig)
    return fig


def key_values(mapping: dict, keys=None) -> str:
    """Markdown: a two-column table of ``keys`` (default: all) of ``mapping``, so that long values (a
    command, a config) wrap on the page instead of running off it as one printed line."""
    from ..io import markdown_table

    rows = []
    for k in mapping if keys is None else keys:
        value = str(mapping[k]).replace("|", "\\|").replace("`", "'")
        rows.append([str(k), f"`{value}`"])  # as code, so that a command's -- stays two hyphens
    return markdown_table(rows, ["field", "value"])
