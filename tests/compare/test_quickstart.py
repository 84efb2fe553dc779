"""The quickstart pipeline end to end on a tiny model (the real one runs in `tunelab quickstart`)."""
from __future__ import annotations

import json

from tunelab.compare.quickstart import run_quickstart


def test_quickstart_zero_shot_then_lora(tiny_dir, tmp_path):
    shown = []
    res = run_quickstart(model=str(tiny_dir), task="dates", n_test=4, n_train=24, epochs=1.0,
                         out=tmp_path / "qs", say=lambda m: None, show=lambda rep, tok: shown.append(rep))
    assert [r["arm"] for r in res.rows] == ["zero-shot", "LoRA fine-tuned"]
    assert all(r["metric"] == "exact_match" and 0.0 <= r["value"] <= 1.0 for r in res.rows)
    assert res.rows[1]["tokens_trained"] > 0
    assert len(shown[0].examples) == 2  # two rendered examples, with their trained tokens
    saved = json.loads((tmp_path / "qs" / "quickstart.json").read_text())
    assert saved["rows"] == res.rows
    for sub in ("zero_shot", "lora_eval"):
        results = json.loads((tmp_path / "qs" / sub / "results.json").read_text())
        assert results["n"] == 4 and "exact_match" in results["metrics"]
    assert (tmp_path / "qs" / "lora" / "adapter" / "adapter_config.json").is_file()
    adapter = json.loads((tmp_path / "qs" / "lora_eval" / "results.json").read_text())["model"]["adapter"]
    assert adapter and adapter.endswith("adapter")
