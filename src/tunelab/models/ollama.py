"""An Ollama Modelfile for an exported GGUF: FROM, TEMPLATE, SYSTEM and stop tokens.

Ollama renders prompts with Go templates, not Jinja, so the chat template has to be translated.
We do not parse Jinja: we render the model's own template on probe conversations and accept it
as ChatML (`<|im_start|>role\\ncontent<|im_end|>\\n`, SmolLM2, Qwen, ...) only when every probe
renders exactly as ChatML would, with an optional default system prompt that the template
inserts when the conversation has none (SmolLM2 does) and which becomes Ollama's SYSTEM. Any
other template gets a Modelfile without TEMPLATE (Ollama then falls back on the template in the
GGUF's metadata, which it recognises for common families) and a warning.
"""
from __future__ import annotations

import re

MODELFILE_SUFFIX = ".Modelfile"  # OUT.gguf -> OUT.Modelfile, beside it

CHATML_TEMPLATE = '''{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range .Messages }}{{- if ne .Role "system" }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}{{- end }}<|im_start|>assistant
'''

_PROBES = [  # (messages, what ChatML renders after the system block)
    [{"role": "user", "content": "U1"}],
    [{"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}],
]


def _chatml(messages) -> str:
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + "<|im_start|>assistant\n"


def chatml_default_system(tokenizer) -> tuple[bool, str | None]:
    """(is ChatML, the default system prompt the template adds or None)."""
    template = tokenizer.chat_template
    if not template:
        return False, None
    try:
        def render(msgs):
            return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

        with_system = [{"role": "system", "content": "S0"}, *_PROBES[1]]
        if render(with_system) != _chatml(with_system):
            return False, None
        default = None
        for msgs in _PROBES:
            text = render(msgs)
            if text == _chatml(msgs):
                continue
            m = re.fullmatch(r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n(.*)", text, flags=re.S)
            if not m or m.group(2) != _chatml(msgs) or default not in (None, m.group(1)):
                return False, None
            default = m.group(1)
        return True, default
    except Exception:  # a template that needs other inputs (tools, dates): not ChatML as we know it
        return False, None


def _quote(text: str) -> str:
    if '"""' in text:
        text = text.replace('"""', '\\"\\"\\"')
    return f'"""{text}"""'


def modelfile(gguf_name: str, tokenizer) -> tuple[str, str | None]:
    """(Modelfile text, a warning or None). `gguf_name` is the file name, relative to the Modelfile."""
    is_chatml, system = chatml_default_system(tokenizer)
    lines = [f"# written by tunelab export; in this folder run: ollama create NAME -f {gguf_name.rsplit('.', 1)[0]}{MODELFILE_SUFFIX}",
             f"FROM ./{gguf_name}"]
    warning = None
    stops: list[str] = []
    if is_chatml:
        lines.append(f"TEMPLATE {_quote(CHATML_TEMPLATE)}")
        if system is not None:
            lines.append(f"SYSTEM {_quote(system)}")
        stops = ["<|im_start|>", "<|im_end|>"]
    else:
        warning = ("the chat template is not ChatML, so the Modelfile has no TEMPLATE: Ollama uses the one it "
                   "recognises from the GGUF's metadata, or add a TEMPLATE by hand")
    eos = tokenizer.eos_token
    if eos and eos not in stops:
        stops.append(eos)
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    return "\n".join(lines) + "\n", warning
