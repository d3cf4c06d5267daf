"""Learned alignment judges as scorers: T2I-CompBench's BLIP-VQA protocol and CLIPScore, on transformers.

A judge is a *scorer* for :func:`minitune.evaluate.evaluate_pipeline`: ``judge(images, prompts)``
takes the package's images (a float tensor [N, 3, H, W] in [-1, 1], as the samplers return them) and
one prompt per image, and returns ``{metric: per-image numpy array}``. Judges batch internally, run on
the device their model is on, and give the same score to an image whatever it is batched with.

**BLIP-VQA** (:class:`BlipVqaJudge`, metric ``blip_vqa``) follows T2I-CompBench's attribute-binding
metric (Huang et al., NeurIPS 2023): the prompt is split into noun phrases, BLIP's VQA model is asked
"<phrase>?" about the image for each, and the image's score is the product over phrases of
P(yes) = p("yes") / (p("yes") + p("no")), where p is the softmax of the answer decoder's first token
after its start token. That is the benchmark's ``vqa_prob`` inference: one decoder step, no answer
generation or ranking over an answer list. As there, the question is lower-cased, stripped of
``.!"()*#:;~``, truncated to 35 tokens, its first token is BLIP's ``[ENC]`` token, and at most the
first 8 phrases count (the benchmark scores a missing phrase as 1, so the product runs over the phrases
there are).

Where this differs from the benchmark:

- *Phrase splitting.* T2I-CompBench takes spaCy's ``en_core_web_sm`` noun chunks, and so does this judge
  where spaCy and that model are installed (``pip install spacy`` and its ``en_core_web_sm`` package;
  :func:`phrase_splitter`). Elsewhere it uses a small rule-based splitter, :func:`noun_phrases`, made for
  T2I-CompBench-style prompts (no model download); the judge's ``phrase_splitter`` names the one it used,
  and runs record it with the judge. The rule-based splitter cuts the prompt at coordinators ("and", "or",
  "with", "while", ...), at list commas
  (a comma followed by a determiner, a number or a coordinator; "a bold, striking sunflower" keeps its
  comma; "and" between two colours, as in "a black and white cat", does not cut), at relations ("on the
  left of", "on top of", "next to", "in front of", "above", "on", "in", "for", ...) and relative pronouns
  ("which", "who"), at a few linking verbs ("is", "are", "sits", "standing", ...), and before a determiner or
  number that starts a new phrase. Relations are dropped, where spaCy keeps "the left" or "top" as
  chunks of their own and asks BLIP about them; "of" stays inside a phrase ("a cup of tea" is one
  phrase, two chunks for spaCy); other verbs stay in the phrase before them ("the sunflower
  brightened up"); a prompt with no phrase left is asked as a whole.
- *Weights and image size.* The benchmark runs BLIP's own code and ``model_base_vqa_capfilt_large``
  checkpoint at 480×480 pixels. This judge runs transformers' port of BLIP's base VQA model
  (``Salesforce/blip-vqa-base`` by default; ``Salesforce/blip-vqa-capfilt-large`` is the other one)
  at the 384×384 its processor uses. Which hub checkpoint holds exactly the benchmark's weights is not
  checked here; ``model_id`` picks either.
- *Images* are quantised to uint8 before the processor resizes them, as writing them to image files
  for the benchmark does.

**CLIPScore** (:class:`ClipScoreJudge`, metric ``clipscore``) is Hessel et al. (EMNLP 2021):
``w · max(cos(E_image, E_text), 0)`` with w = 2.5, on ViT-B/32 by default as in the paper (and in
T2I-CompBench's CLIP metric, which reports the plain cosine). Hessel et al.'s reference code puts
"A photo depicts " before each caption; ``prefix`` does that, off by default as in most text-to-image
evaluations. torchmetrics' ``CLIPScore`` is the same quantity ×40 (``100 · max(cos, 0)``).

:func:`make_scorer` builds any judge of :func:`available_judges` by name, for the command line.
"""

from __future__ import annotations

import re
from typing import Callable

import numpy as np
import torch
from transformers import BlipForQuestionAnswering, BlipProcessor, CLIPModel, CLIPProcessor

from . import resolve_device
from .plugins import registry

BLIP_VQA_MODEL = "Salesforce/blip-vqa-base"
CLIP_MODEL = "openai/clip-vit-base-patch32"
CLIPSCORE_WEIGHT = 2.5  # Hessel et al.'s w: CLIP's caption cosines rarely pass 0.4, so scores land in about [0, 1]
MAX_PHRASES = 8  # T2I-CompBench's np_num: the noun phrases asked about per prompt
MAX_QUESTION_TOKENS = 35  # BLIP's VQA question length

# --------------------------------------------------------------------------- phrase splitting

_COORDINATORS = {"and", "or", "with", "while", "but", "plus", "&", "as well as", "along with", "together with"}
_RELATIONS = {
    "on the left of", "on the right of", "to the left of", "to the right of", "on the left", "on the right",
    "to the left", "to the right", "on the left side of", "on the right side of", "on top of", "on the top of",
    "at the top of", "at the bottom of", "on the bottom of", "in front of", "in the front of", "on the side of",
    "at the back of", "in the middle of", "in the center of", "next to", "close to", "near to", "left of", "right of",
    "above", "below", "under", "underneath", "beneath", "behind", "beside", "near", "over", "on", "in",
    "inside", "at", "by", "against", "among", "between", "onto", "into", "atop", "across", "around", "within",
    "for", "from", "which", "who", "whose",
}
_LINKING = {"is", "are", "was", "were", "be", "being", "been", "there", "sits", "sit", "sitting", "sat", "stands",
            "stand", "standing", "stood", "lies", "lie", "lying", "lay", "hangs", "hanging", "rests", "resting",
            "placed", "has", "have", "had", "holds", "holding"}
_NUMBERS = {"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"}
_DETERMINERS = {"a", "an", "the", "some", "several", "many", "this", "that", "these", "those", "his", "her", "its",
                "their", "my", "our", "your", "each", "every", "another"} | _NUMBERS
_COLOURS = {"red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray", "grey", "gold",
            "golden", "silver", "beige", "tan", "cyan", "magenta", "violet", "navy", "teal", "maroon", "turquoise", "ivory"}
_SEPARATORS = _COORDINATORS | _RELATIONS | _LINKING | {";", ":"}
_LONGEST = max(len(s.split()) for s in _SEPARATORS)
_WORD = re.compile(r"[\w'’-]+|[,;:&]")


def _normalise(prompt) -> list[str]:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"Every prompt must be a non-empty string, got {prompt!r}; drop empty lines from the prompt list.")
    words = _WORD.findall(prompt.lower())
    if not words:
        raise ValueError(f"The prompt {prompt!r} has no words to ask about; give each image a descriptive prompt.")
    return words


def _separator_at(words: list[str], i: int) -> int:
    """Length of the separator starting at words[i] (the longest that matches), 0 if none does."""
    nxt = words[i + 1] if i + 1 < len(words) else None
    if words[i] in ("and", "or") and i > 0 and words[i - 1] in _COLOURS and nxt in _COLOURS:
        return 0  # "a black and white cat" is one phrase
    for n in range(min(_LONGEST, len(words) - i), 0, -1):
        if " ".join(words[i:i + n]) in _SEPARATORS:
            return n
    if words[i] == "," and (nxt is None or nxt in _DETERMINERS or nxt in _COORDINATORS or nxt.isdigit()):
        return 1
    if words[i] == "of" and nxt is not None and (nxt in _DETERMINERS or nxt.isdigit()):
        return 1  # "a photo of a cat": two phrases; "a cup of tea" stays one
    return 0


def noun_phrases(prompt: str, max_phrases: int | None = None) -> list[str]:
    """The noun phrases BLIP-VQA asks about, lower-cased: "a red book and a yellow vase" -> ["a red book",
    "a yellow vase"]; "a cat on the left of a dog" -> ["a cat", "a dog"]. See the module docstring for the
    rules and how they differ from spaCy's noun chunks. A prompt without any phrase is returned whole;
    `max_phrases` keeps the first ones."""
    words = _normalise(prompt)
    phrases, current, i = [], [], 0
    while i < len(words):
        n = _separator_at(words, i)
        starts_new = words[i] in _DETERMINERS or words[i].isdigit()
        if n or (starts_new and current):
            phrases.append(current)
            current = []
        if n:
            i += n
            continue
        current.append(words[i])
        i += 1
    phrases.append(current)
    texts = [re.sub(r"(\s+of)+$", "", " ".join(p).replace(" ,", ",").strip(", ")) for p in phrases]
    texts = [t for t in texts if t and not set(t.split()) <= _DETERMINERS]
    texts = texts or [" ".join(words).replace(" ,", ",")]
    return texts[:max_phrases] if max_phrases else texts


SPACY = "spacy en_core_web_sm noun chunks"
RULES = "rule-based"


def phrase_splitter():
    """The phrase splitter BLIP-VQA uses, and its name: spaCy's ``en_core_web_sm`` noun chunks where spaCy and the
    model are installed (T2I-CompBench's own), else the rule-based :func:`noun_phrases`."""
    try:
        import spacy

        nlp = spacy.load("en_core_web_sm")
    except (ImportError, OSError):
        return RULES, noun_phrases

    def chunks(prompt: str, max_phrases: int | None = None) -> list[str]:
        words = _normalise(prompt)
        found = [chunk.text for chunk in nlp(prompt).noun_chunks] or [" ".join(words)]
        return found[:max_phrases] if max_phrases else found

    return SPACY, chunks


def vqa_question(phrase: str) -> str:
    """BLIP's question for a phrase, as T2I-CompBench writes it: "<phrase>?", cleaned as BLIP cleans questions."""
    return re.sub(r'[.!"()*#:;~]', "", f"{phrase}?".lower()).strip()


# --------------------------------------------------------------------------- shared helpers


def check_inputs(images, prompts) -> None:
    """Raise a one-sentence ValueError unless `images` is a float [N, 3, H, W] tensor in [-1, 1] and `prompts`
    holds N non-empty strings."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"Images must be a tensor of shape [N, 3, H, W] in [-1, 1], got {shape}.")
    if not images.is_floating_point() or not bool(torch.isfinite(images).all()):
        raise ValueError("Images must be finite floating-point values in [-1, 1], as the samplers return them.")
    if images.numel() and (images.min() < -1.001 or images.max() > 1.001):
        raise ValueError(f"Images must lie in [-1, 1], got values in [{images.min():.3g}, {images.max():.3g}]; "
                         "map uint8 or [0, 1] images with x / 127.5 - 1 or 2 * x - 1 first.")
    if isinstance(prompts, str) or len(prompts) != len(images):
        n = "a single string" if isinstance(prompts, str) else f"{len(prompts)} prompts"
        raise ValueError(f"Judges need one prompt per image, got {len(images)} images and {n}.")
    for p in prompts:
        _normalise(p)


def to_uint8_list(images: torch.Tensor) -> list[np.ndarray]:
    """[-1, 1] float images -> a list of uint8 [H, W, 3] arrays, what an image file would hold."""
    x = images.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return list(x.permute(0, 2, 3, 1).numpy())


def _model_device_dtype(model) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters())
    return p.device, p.dtype


def _load(judge: str, model_cls, processor_cls, model_id: str):
    """A model and its processor from a hub id or a local folder; a failure becomes one sentence."""
    try:
        return model_cls.from_pretrained(model_id), processor_cls.from_pretrained(model_id)
    except OSError as err:
        text = str(err).strip()
        reason = text.splitlines()[0].split(". ")[0].rstrip(".") if text else type(err).__name__
        raise ValueError(f"Cannot load the {judge} judge from {model_id!r} ({reason}); pass a hub id that can be reached or "
                         f"a local folder holding a {model_cls.__name__} and its processor saved with save_pretrained.") from err


def _features(out) -> torch.Tensor:
    """CLIP's get_*_features return a tensor in older transformers and an output with pooler_output in newer."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


# --------------------------------------------------------------------------- BLIP-VQA


def _enc_token_id(model, tokenizer) -> int | None:
    """BLIP's [ENC] token, which starts every question it was fine-tuned on: the tokenizer's if it knows it,
    else the row after [DEC] when the vocabulary has BLIP's layout (BERT's words, then [DEC], then [ENC])."""
    tid = tokenizer.convert_tokens_to_ids("[ENC]")
    if tid is not None and tid != tokenizer.unk_token_id:
        return tid
    cfg = model.config.text_config
    return cfg.bos_token_id + 1 if cfg.vocab_size == cfg.bos_token_id + 2 else None


class BlipVqaJudge:
    """T2I-CompBench's BLIP-VQA score (see the module docstring): the product over the prompt's noun phrases
    of BLIP's P(yes) to "<phrase>?"."""

    metric = "blip_vqa"

    def __init__(self, model: BlipForQuestionAnswering, processor: BlipProcessor, *, batch_size: int = 16,
                 max_phrases: int = MAX_PHRASES):
        self.model, self.processor = model.eval(), processor
        self.batch_size, self.max_phrases = batch_size, max_phrases
        self.phrase_splitter, self._split = phrase_splitter()
        tok = processor.tokenizer
        self.yes_id, self.no_id = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
        if tok.unk_token_id in (self.yes_id, self.no_id):
            raise ValueError("The BLIP tokenizer has no 'yes' or 'no' token; use the processor that came with the VQA model.")
        self.enc_id = _enc_token_id(model, tok)

    @classmethod
    def from_pretrained(cls, model_id: str = BLIP_VQA_MODEL, *, device="auto", dtype: torch.dtype | None = None,
                        **kwargs) -> "BlipVqaJudge":
        """Load a BLIP VQA model and its processor (a hub id or a local folder) onto `device`."""
        model, processor = _load("BLIP-VQA", BlipForQuestionAnswering, BlipProcessor, model_id)
        return cls(model.to(resolve_device(device), dtype or torch.float32), processor, **kwargs)

    def phrases(self, prompt: str) -> list[str]:
        return self._split(prompt, self.max_phrases)

    @torch.no_grad()
    def _answer(self, image_embeds: torch.Tensor, which: list[int], questions: list[str]) -> np.ndarray:
        """P(yes) for each question about image_embeds[which[k]].

        Questions run in groups of equal token length, so no padding reaches the answer decoder's
        cross-attention: transformers' BLIP text model does not apply that attention's mask in every version,
        and a padded question would then get a score that depends on its batch-mates."""
        tok, device = self.processor.tokenizer, image_embeds.device
        encoded = tok(questions, truncation=True, max_length=MAX_QUESTION_TOKENS).input_ids
        out = np.zeros(len(questions))
        for length in sorted({len(e) for e in encoded}):
            idx = [k for k, e in enumerate(encoded) if len(e) == length]
            ids = torch.tensor([encoded[k] for k in idx], device=device)
            if self.enc_id is not None:
                ids[:, 0] = self.enc_id
            img = image_embeds[torch.tensor([which[k] for k in idx], device=device)]
            states = self.model.text_encoder(input_ids=ids, attention_mask=torch.ones_like(ids), encoder_hidden_states=img,
                                             encoder_attention_mask=torch.ones(img.shape[:-1], dtype=torch.long, device=device))
            start = torch.full((len(ids), 1), self.model.config.text_config.bos_token_id, device=device)
            first = self.model.text_decoder(input_ids=start, encoder_hidden_states=states.last_hidden_state).logits[:, 0].float()
            # p(yes) / (p(yes) + p(no)) of the softmax over the vocabulary, computed stably from the two logits
            out[idx] = torch.sigmoid(first[:, self.yes_id] - first[:, self.no_id]).cpu().numpy()
        return out

    @torch.no_grad()
    def phrase_probs(self, images: torch.Tensor, prompts) -> list[np.ndarray]:
        """Per image, BLIP's P(yes) for each of its prompt's phrases (the factors of its score)."""
        check_inputs(images, prompts)
        prompts, (device, dtype) = list(prompts), _model_device_dtype(self.model)
        out: list[np.ndarray] = []
        for start in range(0, len(images), self.batch_size):
            chunk, ps = images[start:start + self.batch_size], prompts[start:start + self.batch_size]
            pixels = self.processor.image_processor(images=to_uint8_list(chunk), return_tensors="pt").pixel_values
            embeds = self.model.vision_model(pixel_values=pixels.to(device, dtype)).last_hidden_state
            phrases = [self.phrases(p) for p in ps]
            which = [i for i, ph in enumerate(phrases) for _ in ph]
            probs = self._answer(embeds, which, [vqa_question(q) for ph in phrases for q in ph])
            bounds = np.cumsum([0] + [len(ph) for ph in phrases])
            out += [probs[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        return out

    def __call__(self, images: torch.Tensor, prompts) -> dict[str, np.ndarray]:
        """{"blip_vqa": the product of each image's phrase P(yes)}."""
        return {self.metric: np.array([np.prod(p) for p in self.phrase_probs(images, prompts)], np.float64)}


# --------------------------------------------------------------------------- CLIPScore


class ClipScoreJudge:
    """CLIPScore (Hessel et al. 2021): w · max(cos(image, prompt), 0) with w = 2.5 (see the module docstring)."""

    metric = "clipscore"

    def __init__(self, model: CLIPModel, processor: CLIPProcessor, *, weight: float = CLIPSCORE_WEIGHT, prefix: str = "",
                 batch_size: int = 32):
        self.model, self.processor = model.eval(), processor
        self.weight, self.prefix, self.batch_size = weight, prefix, batch_size

    @classmethod
    def from_pretrained(cls, model_id: str = CLIP_MODEL, *, device="auto", dtype: torch.dtype | None = None,
                        **kwargs) -> "ClipScoreJudge":
        """Load a CLIP model and its processor (a hub id or a local folder) onto `device`."""
        model, processor = _load("CLIPScore", CLIPModel, CLIPProcessor, model_id)
        return cls(model.to(resolve_device(device), dtype or torch.float32), processor, **kwargs)

    @torch.no_grad()
    def cosine(self, images: torch.Tensor, prompts) -> np.ndarray:
        """Cosine similarity of CLIP's image and text embeddings, one per (image, prompt) pair."""
        check_inputs(images, prompts)
        prompts, (device, dtype) = list(prompts), _model_device_dtype(self.model)
        max_len = self.model.config.text_config.max_position_embeddings
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk, ps = images[start:start + self.batch_size], prompts[start:start + self.batch_size]
            pixels = self.processor.image_processor(images=to_uint8_list(chunk), return_tensors="pt").pixel_values
            text = self.processor.tokenizer([self.prefix + p for p in ps], padding=True, truncation=True,
                                            max_length=max_len, return_tensors="pt").to(device)
            img = _features(self.model.get_image_features(pixel_values=pixels.to(device, dtype))).float()
            txt = _features(self.model.get_text_features(input_ids=text.input_ids, attention_mask=text.attention_mask)).float()
            out.append(torch.nn.functional.cosine_similarity(img, txt, dim=-1).cpu())
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)

    def __call__(self, images: torch.Tensor, prompts) -> dict[str, np.ndarray]:
        """{"clipscore": w · max(cos, 0) per image}."""
        return {self.metric: self.weight * np.maximum(self.cosine(images, prompts), 0.0)}


# --------------------------------------------------------------------------- registry


def _learned(cls, name: str, default_id: str) -> Callable:
    def make(device="auto", model_id: str | None = None, dtype=None):
        named = registry().judge_models.get((name, model_id))
        if named is not None:  # weights a plug-in builds by name, e.g. the tiny test judges
            judge = named()
            judge.model.to(resolve_device(device))
            return judge
        return cls.from_pretrained(model_id or default_id, device=device, dtype=dtype)
    make.__doc__ = f"{cls.__name__} from `model_id` (default {default_id!r}, or weights a plug-in names)."
    return make


JUDGES: dict[str, Callable] = {"blip-vqa": _learned(BlipVqaJudge, "blip-vqa", BLIP_VQA_MODEL),
                               "clipscore": _learned(ClipScoreJudge, "clipscore", CLIP_MODEL)}


def available_judges() -> dict[str, Callable]:
    """Every judge by name: the learned ones of :data:`JUDGES` and those the plug-ins add (the Shapes oracle)."""
    return registry().judges | JUDGES


def make_scorer(name: str, device="auto", model_id: str | None = None, dtype: torch.dtype | None = None) -> Callable:
    """The scorer called `name` in :func:`available_judges`, for ``evaluate_pipeline(..., scorers={name: ...})``.

    model_id: a hub id or local folder for a learned judge (default: :data:`BLIP_VQA_MODEL`, :data:`CLIP_MODEL`),
    or weights a plug-in names ("tiny": a randomly initialised tiny judge from :mod:`minitune.testing`, for tests
    and offline demos; its scores mean nothing).
    """
    judges = available_judges()
    if name not in judges:
        raise ValueError(f"Unknown scorer {name!r}; choose one of {', '.join(judges)}.")
    return judges[name](device=device, model_id=model_id, dtype=dtype)
