"""Tiny random-initialised Llama models with a real (trained-on-the-fly) BPE tokenizer.

Tests and examples need a model that loads in milliseconds but behaves like the real thing:
same architecture family as SmolLM2, a byte-level BPE tokenizer with special tokens and a
ChatML chat template. Training a 400-token BPE on a fixed text takes ~50 ms, so nothing is
downloaded and nothing is stored in the repository.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = (
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 10 42 2021-03-05. "
    "Question: what is the answer? Answer: the answer is yes, no, maybe. "
    "user assistant system You are a helpful assistant. Summarize: Alice met Bob in Paris. "
    "Convert the date March 5, 2021 to ISO format. Reverse the words. Hello, world! "
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ ,.;:!?'\"()[]{}<>-_=+*/#@$%&|~`^\n\t"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@lru_cache(maxsize=4)
def _tokenizer_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 20, trainer=trainer)
    return tok.to_str()


def tiny_tokenizer(vocab_size: int = 512, chat_template: str | None = CHATML_TEMPLATE):
    """A byte-level BPE tokenizer (any text encodes) with ChatML specials and template."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(vocab_size)),
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tok.chat_template = chat_template
    return tok


@dataclass(frozen=True)
class TinyShape:
    """The tiny Llama's architecture; every field is also a keyword of `tiny_model`."""

    vocab_size: int = 512
    """Must cover the tokenizer's ids (tiny_tokenizer's vocab_size)."""
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    """Fewer than num_heads: grouped-query attention, as SmolLM2."""
    intermediate_size: int = 128
    max_position_embeddings: int = 1024
    tie_word_embeddings: bool = True
    """The output layer shares the embedding matrix, as SmolLM2."""


def tiny_model(shape: TinyShape | None = None, *, seed: int = 0, **keywords):
    """A random-initialised LlamaForCausalLM (fp32, eval mode), deterministic for a seed.

    The architecture comes as a TinyShape, as its fields' keywords (`hidden_size=32`), or both
    (the keywords override)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    s = replace(shape or TinyShape(), **keywords)
    config = LlamaConfig(
        vocab_size=s.vocab_size,
        hidden_size=s.hidden_size,
        intermediate_size=s.intermediate_size,
        num_hidden_layers=s.num_layers,
        num_attention_heads=s.num_heads,
        num_key_value_heads=s.num_kv_heads,
        max_position_embeddings=s.max_position_embeddings,
        tie_word_embeddings=s.tie_word_embeddings,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval()


def tiny_model_and_tokenizer(**kwargs):
    tok = tiny_tokenizer(vocab_size=kwargs.get("vocab_size", 512))
    return tiny_model(**kwargs), tok


def save_tiny(folder: str | Path, **kwargs) -> Path:
    """Write a tiny model + tokenizer as a normal HF folder (safetensors) and return it."""
    model, tok = tiny_model_and_tokenizer(**kwargs)
    folder = Path(folder)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
