"""Images between the model and the eye: float tensors [B, 3, H, W] in [-1, 1] and uint8 arrays [B, H, W, 3].

Every pipeline's images pass through here on their way to PNG files (single or as a grid), judges and plots; the Shapes
world (:mod:`minitune.toy.world`) uses the same two functions.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(images) -> np.ndarray:
    """Model images (float [B, 3, H, W] in [-1, 1]) or PIL images -> uint8 [B, H, W, 3]."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"Images must be a tensor of shape [B, 3, H, W]; got {tuple(images.shape)}.")
        x = images.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round()
        return x.to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if isinstance(images, (list, tuple)):
        return np.stack([np.asarray(im.convert("RGB") if hasattr(im, "convert") else im) for im in images])
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"Images must be uint8 [B, H, W, 3] or float [B, 3, H, W]; got shape {arr.shape}.")
    return arr.astype(np.uint8)


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
