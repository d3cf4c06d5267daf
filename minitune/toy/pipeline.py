"""The Shapes-world text-to-image model as a real diffusers pipeline.

Four components, as in Stable Diffusion but tiny and in pixel space (no VAE):

- ``tokenizer``: a word-level ``PreTrainedTokenizerFast`` over the Shapes-world vocabulary;
- ``text_encoder``: a 2-layer ``CLIPTextModel`` (hidden size 128 in the shipped model);
- ``unet``: a ``UNet2DConditionModel`` on 32×32 RGB with cross-attention to the prompt;
- ``scheduler``: a ``DDPMScheduler`` (cosine schedule, ε-prediction).

Classifier-free guidance uses the empty prompt ``""`` as the unconditional input (the model is
trained with ~10 % of prompts dropped to ``""``). ``save_pretrained``/``from_pretrained`` work as
for any diffusers pipeline; :func:`load_pipeline` loads the weights shipped inside the package.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import DDPMScheduler, DiffusionPipeline, ImagePipelineOutput, UNet2DConditionModel
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from .. import GUIDANCE_SCALE
from ..text import word_tokenizer
from .scoring import category_of, oracle_scorer
from . import world
from .family import Shapes

WEIGHTS_DIR = Path(__file__).parent / "weights" / "shapes-base"
MAX_LENGTH = 12


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer: one id per Shapes-world word, padded to MAX_LENGTH."""
    return word_tokenizer(world.VOCAB, MAX_LENGTH)


def build_components(seed: int = 0, width: int = 64, channels=(32, 64, 64)) -> dict:
    """Freshly initialised components; the shipped model has ``width=128, channels=(32, 64, 128)``."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=MAX_LENGTH, pad_token_id=0, bos_token_id=1,
            eos_token_id=2, projection_dim=width,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=world.SIZE, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=tuple(channels), norm_num_groups=8, cross_attention_dim=width, attention_head_dim=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    )
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon")
    return {"unet": unet, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


class ShapesPipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin):
    """Text-to-image for the Shapes world; call it like ``StableDiffusionPipeline``.

    LoRA adapters load, fuse and unload as in Stable Diffusion (``load_lora_weights``,
    ``fuse_lora``, ``unload_lora_weights``), on the UNet and the text encoder.

    The Shapes world plugs into minitune through its plug-in (:mod:`minitune.toy.plugin`), its family
    (the class attribute ``minitune_family``, :class:`~minitune.toy.family.Shapes`) and five methods that
    the core looks up by name (with ``getattr``) and never by importing this module: ``check_prompt``
    (the grammar, so that a prompt the oracle cannot judge is refused before any sampling),
    ``near_misses`` (rival prompts for the contrast signal), ``oracle`` (the exact judge's verdict per
    image, stored in a candidate pool), ``default_scorers`` (the judges of an evaluation) and
    ``category_of`` (the row an evaluation reports a prompt under).
    A pipeline without them (Stable Diffusion, SDXL, SD3) gets the generic behaviour: the family of
    its pipeline class, any prompt, no oracle, near misses and judges given by the caller.
    """

    model_cpu_offload_seq = "text_encoder->unet"
    minitune_family = Shapes

    def __init__(self, unet, text_encoder, tokenizer, scheduler):
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Token ids [B, MAX_LENGTH]; '' is the unconditional prompt. Every word must be in the world's
        vocabulary (an unknown word would silently become <unk>), but word sequences need not parse:
        the MI diagnostics score prompts with a word dropped. ``__call__`` checks the grammar."""
        norm = [" ".join(p.lower().replace(",", " ").split()) for p in prompts]
        unknown = sorted({w for p in norm for w in p.split() if w not in world.VOCAB})
        if unknown:
            raise ValueError(f"The Shapes world does not know the words {', '.join(unknown)} "
                             f"(known words: {' '.join(world.VOCAB)}).")
        return self.tokenizer(norm, padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt").input_ids

    def check_prompt(self, prompt: str) -> None:
        """Raise the world's one-sentence ValueError for a prompt its grammar, and so its oracle, cannot read."""
        world.parse(prompt)

    def near_misses(self, prompt: str) -> list[str]:
        """Prompts that get one fact of `prompt` wrong (:func:`~minitune.toy.world.near_misses`), the rivals
        of the contrast signal."""
        return world.near_misses(prompt)

    def oracle(self, images, prompts: list[str]) -> list[dict]:
        """The exact judge's verdict on each image under its prompt: strict, soft, well_formed, failures, ...
        (the records of :func:`~minitune.toy.world.evaluate`)."""
        return world.evaluate(images, list(prompts)).records

    def default_scorers(self) -> dict:
        """The judges of :func:`minitune.evaluate.evaluate_pipeline` when the caller names none: the oracle."""
        return {"oracle": oracle_scorer}

    def category_of(self, prompt: str) -> str:
        """The category an evaluation reports `prompt` under: the grammar's, "other" where it cannot parse it."""
        return category_of(prompt)

    def encode_prompt(self, prompts: list[str], device=None) -> torch.Tensor:
        """Prompt embeddings [B, MAX_LENGTH, width] for the UNet's cross-attention."""
        device = device or self._execution_device
        ids = self.tokenize(list(prompts)).to(device)
        return self.text_encoder(ids).last_hidden_state

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        num_images_per_prompt: int = 1,
        guidance_scale: float = GUIDANCE_SCALE,
        num_inference_steps: int = 25,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ValueError("No prompt given: pass a prompt string or a non-empty list of prompts.")
        for p in prompts:
            if p != "":  # '' samples unconditionally
                self.check_prompt(p)
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"Unknown output_type {output_type!r}: use 'pil', 'np' or 'pt'.")
        device, dtype = self._execution_device, self.unet.dtype
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        n = len(prompts)
        cond = self.encode_prompt(prompts, device)
        cfg = guidance_scale != 1.0
        if cfg:
            cond = torch.cat([cond, self.encode_prompt([""], device).expand(n, -1, -1)])
        shape = (n, 3, world.SIZE, world.SIZE)
        x = randn_tensor(shape, generator=generator, device=device, dtype=dtype) if latents is None else latents.to(device, dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        for t in self.progress_bar(self.scheduler.timesteps):
            inp = torch.cat([x, x]) if cfg else x
            eps = self.unet(inp, t, encoder_hidden_states=cond.to(dtype)).sample
            if cfg:
                eps_c, eps_u = eps.chunk(2)
                eps = eps_u + guidance_scale * (eps_c - eps_u)
            x = self.scheduler.step(eps, t, x, generator=generator).prev_sample
        self.maybe_free_model_hooks()
        images = x.clamp(-1, 1)
        if output_type == "np":
            images = world.to_uint8(images)
        elif output_type == "pil":
            from PIL import Image

            images = [Image.fromarray(a) for a in world.to_uint8(images)]
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)


def load_pipeline(path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                  dtype=torch.float32) -> ShapesPipeline:
    """Load a Shapes pipeline: a saved folder, or ``None`` / ``"toy"`` for the base model shipped with minitune."""
    path = WEIGHTS_DIR if path is None or str(path) == "toy" else Path(path)
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(
            f"No Shapes pipeline at {path}: the folder must contain model_index.json (made by save_pretrained "
            f"or `minitune toy-train`)."
        )
    pipe = ShapesPipeline.from_pretrained(path, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)

