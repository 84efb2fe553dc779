"""Trained-token masks come from the template's own rendering, and the prompt part of every
assistant turn is token for token what inference renders with add_generation_prompt=True."""
from __future__ import annotations

import pytest

from tunelab.data.records import Conversation
from tunelab.errors import TunelabError
from tunelab.models.tiny import tiny_tokenizer
from tunelab.templates import PLAIN_TEMPLATE, encode, encode_all, encode_prompt
from tunelab.templates.render import IGNORE

# SmolLM2-135M-Instruct's template as shipped in its GGUF (adds a default system turn).
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# ChatML as used by Qwen-style models.
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Llama-3 style: a BOS in the text, header tokens, content stripped, no newline after eot.
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '<|endoftext|>\n\n' + m['content'] | trim + '<|im_end|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant<|endoftext|>\n\n' }}{% endif %}"
)
TEMPLATES = {"smollm2": SMOLLM2, "chatml": CHATML, "llama3": LLAMA3, "plain": None}

SINGLE = [{"role": "user", "content": "Convert March 5, 2021 to ISO."},
          {"role": "assistant", "content": "2021-03-05"}]
MULTI = [{"role": "system", "content": "You are terse."},
         {"role": "user", "content": "Hello there"},
         {"role": "assistant", "content": "Hi."},
         {"role": "user", "content": "What is 2+2?"},
         {"role": "assistant", "content": "4"},
         {"role": "user", "content": "And 3+3?"},
         {"role": "assistant", "content": "The answer is 6."}]


def _tok(template):
    return tiny_tokenizer(chat_template=template)


@pytest.mark.parametrize("style", list(TEMPLATES))
@pytest.mark.parametrize("messages", [SINGLE, MULTI], ids=["single", "multi"])
def test_prompt_tokens_equal_inference_rendering(style, messages):
    tok = _tok(TEMPLATES[style])
    enc = encode(tok, Conversation("x", messages))
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt_ids = encode_prompt(tok, messages[:i])
        # the training sequence starts with exactly the inference prompt of this turn ...
        assert enc.input_ids[: len(prompt_ids)] == prompt_ids
        # ... and the answer tokens that follow are trained, decoding to the assistant text
        nxt = [t for t, lab in zip(enc.input_ids[len(prompt_ids):], enc.labels[len(prompt_ids):])]
        answer = tok.decode(nxt)
        assert answer.startswith(m["content"].strip())
        assert enc.labels[len(prompt_ids)] != IGNORE


@pytest.mark.parametrize("style", list(TEMPLATES))
def test_only_assistant_turns_are_trained(style):
    tok = _tok(TEMPLATES[style])
    enc = encode(tok, Conversation("x", MULTI))
    trained = tok.decode([t for t, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE])
    for m in MULTI:
        if m["role"] == "assistant":
            assert m["content"] in trained
        else:
            assert m["content"] not in trained
    # labels equal inputs where trained (the loop shifts them), IGNORE elsewhere
    assert all(lab in (IGNORE, t) for t, lab in zip(enc.input_ids, enc.labels))
    # the end-of-turn token is trained so the model learns to stop
    assert tok.eos_token_id in [t for t, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE]


def test_train_on_all_trains_every_token():
    tok = _tok(CHATML)
    enc = encode(tok, Conversation("x", MULTI), train_on="all")
    assert enc.labels == enc.input_ids


def test_text_format_trains_everything_and_ends_with_eos():
    tok = _tok(CHATML)
    enc = encode(tok, Conversation("x", text="plain text to learn"))
    assert enc.labels == enc.input_ids and enc.input_ids[-1] == tok.eos_token_id


def test_plain_template_documented_shape():
    tok = _tok(None)
    assert tok.chat_template is None
    text = tok.decode(encode(tok, Conversation("x", SINGLE)).input_ids)
    assert text == "### Prompt:\nConvert March 5, 2021 to ISO.\n\n### Response:\n2021-03-05<|im_end|>\n\n"
    assert PLAIN_TEMPLATE  # exported for users who want to set it explicitly


def test_truncation_counts_and_drop(caplog):
    tok = _tok(CHATML)
    long = Conversation("long", [{"role": "user", "content": "a b c " * 50}, {"role": "assistant", "content": "ok " * 40}])
    short = Conversation("short", SINGLE)
    n_full = len(encode(tok, long).input_ids)
    notes: list[str] = []
    out = encode_all(tok, [long, short], max_length=n_full - 5, notes=notes)
    assert [e.id for e in out] == ["long", "short"] and out[0].truncated and len(out[0].input_ids) == n_full - 5
    assert "1 of 2 rows were longer than max_length" in notes[0]
    notes.clear()
    out = encode_all(tok, [long, short], max_length=n_full - 5, truncate=False, notes=notes)
    assert [e.id for e in out] == ["short"] and "dropped" in notes[0]


def test_template_that_cannot_render_a_role():
    no_system = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                 "{{ raise_exception('System role not supported') }}{% endif %}"
                 "{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}")
    tok = _tok(no_system)
    with pytest.raises(TunelabError, match=r"file.jsonl:3: the chat template .* cannot render roles .*system.*System role not supported"):
        encode(tok, Conversation("x", MULTI, source="file.jsonl:3"))


def test_template_that_silently_drops_a_role():
    drops = "{% for m in messages %}{% if m['role'] != 'system' %}{{ m['content'] + '\n' }}{% endif %}{% endfor %}"
    with pytest.raises(TunelabError, match="does not render the 'system' turn"):
        encode(_tok(drops), Conversation("x", MULTI, source="f:1"))
