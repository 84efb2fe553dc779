"""A damaged .gguf (cut short like an interrupted download, or junk) is one line from every command."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tunelab.errors import TunelabError
from tunelab.models.loading import resolve

from .conftest import one_line


def _tiny_gguf(path):
    """A valid GGUF of two small tensors, written with the gguf package's own writer."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_context_length(32)
    w.add_embedding_length(8)
    w.add_tensor("token_embd.weight", np.ones((64, 8), np.float32))
    w.add_tensor("output_norm.weight", np.ones((8,), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def damaged(tmp_path):
    """name -> path of a damaged copy: header cut, data cut, one byte short, junk, empty."""
    good = _tiny_gguf(tmp_path / "good.gguf").read_bytes()
    cuts = {"header_cut": good[:100], "data_cut": good[:len(good) // 2], "one_short": good[:-1],
            "junk": bytes(range(256)) * 8, "empty": b""}
    out = {}
    for name, data in cuts.items():
        p = tmp_path / f"{name}.gguf"
        p.write_bytes(data)
        out[name] = p
    return out


@pytest.mark.parametrize("case", ["header_cut", "data_cut", "one_short", "junk", "empty"])
def test_resolve_names_the_damaged_file(damaged, case):
    with pytest.raises(TunelabError) as e:
        resolve(damaged[case])
    msg = str(e.value)
    assert msg.startswith(f"{damaged[case]}: this .gguf file is damaged or incomplete (")
    assert msg.endswith("; download it again")
    if case == "junk":
        assert "magic" in msg
    else:
        assert "cut short" in msg


def test_commands_say_damaged_in_one_line(cli, damaged, tmp_path):
    bad = damaged["data_cut"]
    expected = f"{bad}: this .gguf file is damaged or incomplete"
    code, _, err = cli("eval", bad, "--task", "builtin:dates", "--limit", "2")
    assert code == 2 and expected in one_line(err)

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    code, _, err = cli("export", bad, "--adapter", adapter, "--out", tmp_path / "merged")
    assert code == 2 and expected in one_line(err)
    assert not (tmp_path / "merged").exists()

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    cfg = tmp_path / "t.yaml"
    cfg.write_text(f"model: {bad}\ndata: {{train: {data}, eval: 0}}\nout: {tmp_path / 'run'}\n")
    code, _, err = cli("train", cfg)
    assert code == 2 and expected in one_line(err)
