"""Figures: image grids (also as PNG files without matplotlib), curves and heat maps."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .toy.world import to_uint8


def image_grid(images, cols: int, gap: int = 1) -> np.ndarray:
    """Tile images (uint8 [B, H, W, 3] or model tensors) into one uint8 image, grey gaps between."""
    images = to_uint8(images)
    b, h, w, _ = images.shape
    rows = -(-b // cols)
    grid = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), 64, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = im
    return grid


def save_grid(path, images, cols: int, scale: int = 4) -> None:
    """Write an image grid as a PNG, upscaled without smoothing so pixels stay crisp."""
    grid = image_grid(images, cols)
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(path)


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


def show_grid(images, titles=None, cols: int = 8, size: float = 1.4, fontsize: int = 6):
    """A matplotlib figure of images with optional titles (e.g. prompt and the oracle's verdict)."""
    import matplotlib.pyplot as plt

    images = to_uint8(images)
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * (size + 0.25)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i], interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=fontsize)
    fig.tight_layout()
    return fig
