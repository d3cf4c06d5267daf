"""minitune: MI-TUNE (ICLR 2025) taught and checked in a Shapes world that is judged exactly."""

from __future__ import annotations

import torch

__version__ = "0.1.0"

# The Shapes family's classifier-free guidance scale (minitune.toy.family; other families bring their own): the one
# at which the shipped Shapes model is documented (README, "The shipped base model"). Chosen on training-split prompts
# (benchmarks/studies/cfg_choice.py): CFG 2 draws 91 % well-formed images against 77 % at CFG 4, and less ink.
GUIDANCE_SCALE = 2.0


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks the current accelerator (CUDA, MPS, ...) when there is one, else the CPU."""
    if str(device) != "auto":
        return torch.device(device)
    if torch.accelerator.is_available():
        return torch.accelerator.current_accelerator()
    return torch.device("cpu")
