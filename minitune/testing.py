"""Tiny, randomly initialised Stable Diffusion, SDXL and SD3 pipelines and learned judges, built in code.

They have the real pipelines' structure (VAE, CLIP text encoders, UNet with cross-attention,
SDXL's added text/time conditioning) at a few hundred thousand parameters, so that every code
path for real models runs offline in seconds: in the tests and in the real-models chapter on CPU.
The tiny learned judges (BLIP-VQA, CLIPScore) at the end do the same for :mod:`minitune.judges`,
which finds them as the judge weights named "tiny" through this module's plug-in, :func:`register`.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from .text import word_tokenizer


_TEXT = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=16,
             pad_token_id=0, bos_token_id=1, eos_token_id=2, projection_dim=32)


# The words the tiny models' tokenizer knows (the Shapes world's vocabulary, enough for random text encoders).
WORDS = ("a above and below blue circle circles cyan green left magenta of one red right square squares three triangle "
         "triangles two yellow").split()


def _tokenizer():
    return word_tokenizer(WORDS, max_length=12)


def _vae():
    return AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32)


def _unet(**extra):
    return UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
                                norm_num_groups=8, attention_head_dim=4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), **extra)


def tiny_sd_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """A randomly initialised StableDiffusionPipeline producing 32×32 images (16×16×4 latents)."""
    torch.manual_seed(seed)
    tok = _tokenizer()
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), **_TEXT))
    pipe = StableDiffusionPipeline(vae=_vae(), text_encoder=text, tokenizer=tok, unet=_unet(cross_attention_dim=32),
                                   scheduler=DDPMScheduler(clip_sample=False, steps_offset=1), safety_checker=None,
                                   feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sdxl_pipeline(seed: int = 0) -> StableDiffusionXLPipeline:
    """A randomly initialised StableDiffusionXLPipeline (two text encoders, added text/time ids)."""
    torch.manual_seed(seed)
    tok = _tokenizer()
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), **_TEXT))
    text_2 = CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=len(tok), **_TEXT))
    unet = _unet(cross_attention_dim=64, addition_embed_type="text_time", addition_time_embed_dim=8,
                 projection_class_embeddings_input_dim=6 * 8 + 32)
    pipe = StableDiffusionXLPipeline(vae=_vae(), text_encoder=text, text_encoder_2=text_2, tokenizer=tok, tokenizer_2=tok,
                                     unet=unet, scheduler=DDPMScheduler(clip_sample=False, steps_offset=1))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sd3_pipeline(seed: int = 0, t5: bool = False):
    """A randomly initialised StableDiffusion3Pipeline: two CLIP encoders with projections (pooled 2×32), an optional
    T5 encoder (without one the pipeline feeds zeros in its place, as diffusers does), an SD3 transformer on
    16×16×4 latents (patch 2, one joint block), a VAE with a shift factor, and SD3.5's flow-matching scheduler."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tok = _tokenizer()
    text, text_2 = (CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=len(tok), **_TEXT)) for _ in range(2))
    text_3 = None
    if t5:
        text_3 = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=64, d_kv=8, d_ff=37, num_layers=1, num_heads=2,
                                         relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=2))
    transformer = SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=4, out_channels=4, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=4, joint_attention_dim=64,
                                        caption_projection_dim=32, pooled_projection_dim=64, pos_embed_max_size=16)
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32,
                        scaling_factor=1.5, shift_factor=0.1, use_quant_conv=False, use_post_quant_conv=False)
    pipe = StableDiffusion3Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
                                    text_encoder=text, tokenizer=tok, text_encoder_2=text_2, tokenizer_2=tok,
                                    text_encoder_3=text_3, tokenizer_3=tok if t5 else None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --------------------------------------------------------------------------- tiny learned judges

_JUDGE_WORDS = ("a an the and or with on of in top left right above below next to front behind near is are two three one "
                "red green blue yellow magenta cyan black white brown pink purple orange circle circles square squares "
                "triangle triangles book vase bench bowl cat dog apple car chair table cup yes no").split()


def tiny_blip_vqa_judge(seed: int = 0, batch_size: int = 16):
    """A randomly initialised BLIP VQA judge (32×32 inputs, a word-level vocabulary with BLIP's [DEC]/[ENC] layout).

    Its weights are drawn wide (std 0.5) so that its P(yes) differs clearly between images and phrases."""
    import tempfile
    from pathlib import Path

    from transformers import BertTokenizer, BlipConfig, BlipForQuestionAnswering, BlipImageProcessor, BlipProcessor

    from .judges import BlipVqaJudge

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "?", ",", *_JUDGE_WORDS, "[DEC]", "[ENC]"]
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "vocab.txt").write_text("\n".join(vocab) + "\n")
        tok = BertTokenizer(str(Path(d) / "vocab.txt"))
    width = 16
    cfg = BlipConfig(
        vision_config=dict(hidden_size=width, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8, initializer_range=0.5),
        text_config=dict(vocab_size=len(vocab), hidden_size=width, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=40, encoder_hidden_size=width, initializer_range=0.5,
                         pad_token_id=0, sep_token_id=3, bos_token_id=len(vocab) - 2))
    torch.manual_seed(seed)
    model = BlipForQuestionAnswering(cfg).eval()
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok)
    return BlipVqaJudge(model, processor, batch_size=batch_size)


def tiny_clipscore_judge(seed: int = 0, batch_size: int = 32):
    """A randomly initialised CLIPScore judge (32×32 inputs, a character-level BPE vocabulary)."""
    import json
    import string
    import tempfile
    from pathlib import Path

    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from .judges import ClipScoreJudge

    chars = string.ascii_lowercase + string.digits + ",.?!'-"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1} | {t: i + 2 for i, t in enumerate([*chars, *(c + "</w>" for c in chars)])}
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "vocab.json").write_text(json.dumps(vocab))
        (Path(d) / "merges.txt").write_text("#version: 0.2\n")
        tok = CLIPTokenizer(str(Path(d) / "vocab.json"), str(Path(d) / "merges.txt"))
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                           patch_size=8),
        projection_dim=16)
    torch.manual_seed(seed)
    model = CLIPModel(cfg).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return ClipScoreJudge(model, CLIPProcessor(image_processor=image_processor, tokenizer=tok), batch_size=batch_size)


def register(registry) -> None:
    """The plug-in: the tiny judges as the weights named "tiny" of the learned judges."""
    registry.judge_models[("blip-vqa", "tiny")] = tiny_blip_vqa_judge
    registry.judge_models[("clipscore", "tiny")] = tiny_clipscore_judge
