"""Model families behind one adapter interface, and the one function that tells a pipeline's family.

Each family is an adapter class over :class:`~minitune.families.base.Family`: Stable Diffusion,
SDXL (ε-prediction, :mod:`~minitune.families.vp`) and SD3 (rectified flow). A pipeline class may
bring its own family as the class attribute ``minitune_family`` (the Shapes pipeline does), so the
core finds it without importing the pipeline's module. Adding a family is one module and one line
in :data:`FAMILIES`.
"""

from __future__ import annotations

from .base import Conditioning, Family, StackedInputs
from .sd import StableDiffusion
from .sd3 import StableDiffusion3
from .sdxl import StableDiffusionXL

__all__ = ["FAMILIES", "Conditioning", "Family", "StackedInputs", "denoiser_for", "family_named", "family_of"]

# Pipeline class-name prefixes, most specific first: the pipelines of diffusers each family serves.
FAMILIES = (("StableDiffusion3", StableDiffusion3), ("StableDiffusionXL", StableDiffusionXL),
            ("StableDiffusion", StableDiffusion))


def family_of(pipe) -> type[Family]:
    """The family of a pipeline: the one its class brings (``minitune_family``), else the one its class serves;
    the only place that looks at a pipeline's class."""
    own = getattr(type(pipe), "minitune_family", None)
    if own is not None:
        return own
    name = type(pipe).__name__
    family = family_named(name)
    if family is not None:
        return family
    raise ValueError(
        f"Unsupported pipeline {name}: minitune measures MI with ShapesPipeline, StableDiffusionPipeline, "
        f"StableDiffusionXLPipeline (UNet ε-prediction models with a DDPM-family scheduler) or StableDiffusion3Pipeline "
        f"(rectified flow)."
    )


def family_named(class_name: str | None) -> type[Family] | None:
    """The diffusers family that serves a pipeline class of this name (as a saved folder's model_index.json names
    it), or None: what :func:`family_of` knows before a pipeline is loaded."""
    for prefix, family in FAMILIES:
        if (class_name or "").startswith(prefix):
            return family
    return None


def denoiser_for(pipe) -> Family:
    """The adapter of a pipeline's family over `pipe`."""
    return family_of(pipe)(pipe)
