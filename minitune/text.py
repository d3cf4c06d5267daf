"""Word-level tokenizers for small text encoders built in code: one id per word of a fixed vocabulary."""

from __future__ import annotations

from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from tokenizers.processors import TemplateProcessing
from transformers import PreTrainedTokenizerFast

SPECIAL = ["<pad>", "<bos>", "<eos>", "<unk>"]


def word_tokenizer(words: list[str], max_length: int) -> PreTrainedTokenizerFast:
    """A tokenizer with ids for SPECIAL then `words`, ``<bos> … <eos>`` around each prompt, padded to `max_length`."""
    vocab = {w: i for i, w in enumerate(SPECIAL + list(words))}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = WhitespaceSplit()
    tok.post_processor = TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
        model_max_length=max_length,
    )
