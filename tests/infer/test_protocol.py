"""The Backend Protocol (infer/protocol.py) is what the callers use, what both backends have, and
what docs/architecture.md lists: a backend written from the docs runs every caller."""
from __future__ import annotations

import ast
import inspect
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import tunelab
from tunelab.infer.backend import LocalBackend
from tunelab.infer.endpoint import PREFIX, EndpointBackend
from tunelab.infer.protocol import Backend, members, prefixed, registered
from tunelab.infer.replay import ReplayBackend

SRC = Path(tunelab.__file__).resolve().parent
ARCHITECTURE = SRC.parents[1] / "docs" / "architecture.md"
METHODS = [m for m in members() if inspect.isfunction(getattr(Backend, m, None))]


@pytest.fixture(scope="module")
def endpoint():
    """An EndpointBackend on a real 127.0.0.1 server that lists one model (all the constructor asks)."""
    class Models(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = json.dumps({"object": "list", "data": [{"id": "m", "object": "model", "created": 0,
                                                           "owned_by": "t"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Models)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield EndpointBackend(f"{PREFIX}http://127.0.0.1:{server.server_address[1]}/v1#m")
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    from tunelab.models.tiny import save_tiny

    from tunelab.infer.load import open_backend

    return open_backend(str(save_tiny(tmp_path_factory.mktemp("tiny") / "tiny-llama")), device="cpu")


def _params(fn) -> list[tuple[str, object]]:
    return [(p.name, p.kind) for p in inspect.signature(fn).parameters.values()]


@pytest.fixture()
def replay(tmp_path):
    preds = tmp_path / "predictions.jsonl"
    preds.write_text('{"prompt": "p", "output": "o"}\n')
    return ReplayBackend(f"replay:{preds}")


@pytest.mark.parametrize("which", ["local", "endpoint", "replay"])
def test_both_backends_have_every_member_with_the_protocols_parameters(which, request):
    backend = request.getfixturevalue(which)
    assert isinstance(backend, Backend)  # the runtime check: names only, so the rest is checked by hand
    missing = [m for m in members() if not hasattr(backend, m)]
    assert missing == []
    for m in METHODS:
        assert _params(getattr(type(backend), m)) == _params(getattr(Backend, m)), m
    own = {n for n, v in vars(type(backend)).items() if callable(v) and not n.startswith("_")}
    assert own == set(METHODS)  # a method a caller could use is in the Protocol


@pytest.mark.parametrize("cls", [LocalBackend, *registered().values()], ids=lambda c: c.__name__)
def test_every_backend_class_declares_the_protocol(cls):
    """Class-level, so a new backend module is checked without an instance: attributes annotated,
    methods with the Protocol's parameters, no other public method."""
    declared = set(getattr(cls, "__annotations__", {})) | set(vars(cls))
    assert [m for m in members() if m not in declared] == []
    for m in METHODS:
        assert _params(getattr(cls, m)) == _params(getattr(Backend, m)), m
    assert {n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")} == set(METHODS)


def test_a_prefixed_backend_is_found_by_its_prefix_and_checked_when_registered():
    assert registered() == {PREFIX: EndpointBackend, "replay:": ReplayBackend} and LocalBackend.prefix is None
    with pytest.raises(TypeError, match="missing: .*stream_chat"):
        @prefixed
        class Half:
            prefix = "half:"

            def generate(self, contexts, seeds, *, batch_size, on_batch=None, max_new_tokens, stop, temperature,
                         top_p):
                return []


def _backend_uses() -> dict[str, set[str]]:
    """{member: files} for every `backend.X`, `self.backend.X`, `chat.backend.X` in src/ (but templates/,
    where `backend` is a tokenizer's Rust backend)."""
    used: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        if path.parent.name == "templates":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            named = (isinstance(owner, ast.Name) and owner.id == "backend") or (
                isinstance(owner, ast.Attribute) and owner.attr == "backend")
            if named:
                used.setdefault(node.attr, set()).add(str(path.relative_to(SRC)))
    return used


def test_callers_use_only_protocol_members():
    used = _backend_uses()
    assert {"generate", "score_choices", "no_reference", "reference", "reference_identity"} <= set(used)  # the walk sees
    assert {m: sorted(f) for m, f in used.items() if m not in members()} == {}


def test_the_architecture_docs_list_exactly_the_protocols_members():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    paragraph = re.search(r"\*\*A backend\*\*.*?(?=\n\*\*A |\n## |\Z)", text, re.S).group(0)
    listed = re.search(r"\(members: (.*?)\)", paragraph, re.S).group(1)
    assert re.findall(r"`(\w+)`", listed) == members()
    assert "one module and its test" in " ".join(paragraph.split()) and "infer/protocol.py" in paragraph


def test_openai_prefix_is_spelled_once():
    """Every check of an `openai:` model string goes through endpoint.PREFIX / is_endpoint (issue 33):
    the bare prefix, as a string of its own, appears once in src/ (help texts name openai:URL#NAME)."""
    found = [f"{path.relative_to(SRC)}:{node.lineno}" for path in SRC.rglob("*.py")
             for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
             if isinstance(node, ast.Constant) and node.value == PREFIX]
    assert len(found) == 1 and found[0].startswith("infer/endpoint.py:"), found
