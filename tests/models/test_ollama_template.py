"""The Modelfile's TEMPLATE, run by Go's text/template (what Ollama renders prompts with), gives
the same prompt text as the model's Jinja chat template.

Ollama hands a Messages template `.System` (the request's system messages, or the Modelfile's
SYSTEM when there are none) and `.Messages` (every message, system ones included); this test
feeds it the same. Skipped when no Go toolchain is on PATH (apt-get install golang-go).
"""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tunelab.models.ollama import CHATML_TEMPLATE, chatml_default_system
from tunelab.models.tiny import CHATML_TEMPLATE as JINJA_CHATML, tiny_tokenizer

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="no Go toolchain (apt-get install golang-go)")

GO_MAIN = """package main

import (
	"encoding/json"
	"os"
	"text/template"
)

type Message struct {
	Role    string
	Content string
}

func main() {
	var data struct {
		System   string
		Messages []Message
	}
	if err := json.Unmarshal([]byte(os.Args[2]), &data); err != nil {
		panic(err)
	}
	tb, _ := os.ReadFile(os.Args[1])
	t := template.Must(template.New("modelfile").Parse(string(tb)))
	if err := t.Execute(os.Stdout, data); err != nil {
		panic(err)
	}
}
"""

CONVERSATIONS = [
    [{"role": "user", "content": "Hi there"}],
    [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hello?"}],
    [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"}],
]


@pytest.fixture(scope="module")
def render_go(tmp_path_factory):
    root = tmp_path_factory.mktemp("go")
    (root / "main.go").write_text(GO_MAIN)
    (root / "go.mod").write_text("module render\n\ngo 1.18\n")
    subprocess.run(["go", "build", "-o", "render", "."], cwd=root, check=True, capture_output=True)
    (root / "template").write_text(CHATML_TEMPLATE)

    def render(system: str, messages: list[dict]) -> str:
        data = {"System": system, "Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]}
        return subprocess.run([str(root / "render"), str(root / "template"), json.dumps(data)],
                              check=True, capture_output=True, text=True).stdout

    return render


@pytest.mark.parametrize("default_system", [None, "You are a helpful assistant."])
@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_go_template_renders_like_the_jinja_template(render_go, messages, default_system):
    jinja = JINJA_CHATML if default_system is None else (
        "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n" + default_system + "<|im_end|>\n' }}{% endif %}"
        + JINJA_CHATML)
    tok = tiny_tokenizer(chat_template=jinja)
    is_chatml, system = chatml_default_system(tok)
    assert is_chatml and system == default_system
    given = [m["content"] for m in messages if m["role"] == "system"]
    # Ollama: the request's system messages, else the Modelfile's SYSTEM
    ollama_system = "\n\n".join(given) if given else (system or "")
    want = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert render_go(ollama_system, messages) == want
