"""The shipped weights: both backends rank ToxiGen hate above neutral; bad files fail cleanly."""
import json
import shutil

import numpy as np
import pytest

from tunelab.errors import TunelabError
from tunelab.safety import toxicity as tox
from tunelab.safety.train_classifier import auroc, load_toxigen

needs_minilm = pytest.mark.skipif(not tox.minilm_available(), reason="embeddings extra not installed")


def _slice(shared_data, per_class=6):
    """A few hate and neutral statements of each group (all deduplicated statements are few)."""
    data = load_toxigen(shared_data / "toxigen")
    texts, labels = [], []
    for g in ("women", "asian"):
        for y in (1, 0):
            idx = [i for i in range(len(data.texts)) if data.groups[i] == g and data.labels[i] == y]
            texts += [data.texts[i] for i in idx[:per_class]]
            labels += [y] * len(idx[:per_class])
    return texts, np.array(labels)


@pytest.mark.parametrize("backend", ["ngram", pytest.param("minilm", marks=needs_minilm),
                                     pytest.param("ensemble", marks=needs_minilm)])
def test_hate_scores_higher_than_neutral(shared_data, backend):
    texts, y = _slice(shared_data)
    scores = tox.ToxicityClassifier(backend).score(texts)
    assert all(0.0 <= s <= 1.0 for s in scores)
    # mostly training statements, so this checks the weights load and point the right way,
    # not generalisation (that is in metrics.json / MODEL_CARD.md)
    assert np.mean([s for s, l in zip(scores, y) if l]) > np.mean([s for s, l in zip(scores, y) if not l])
    assert auroc(scores, y) > 0.8


def test_scores_shape_and_empty_text():
    clf = tox.ToxicityClassifier("ngram")
    long_text = "a calm sentence about gardening. " * 200  # windowed, still one score
    scores = clf.score(["", "   ", "hello there", long_text])
    assert len(scores) == 4 and scores[0] == 0.0 and scores[1] == 0.0
    assert clf.score([]) == []


def test_windows_cover_long_text():
    words = [f"w{i}" for i in range(300)]
    ws = tox.windows(" ".join(words))
    assert ws[0].split()[0] == "w0" and ws[-1].split()[-1] == "w299"
    assert all(len(w.split()) <= tox.WINDOW_WORDS for w in ws)


def _weights_copy(tmp_path):
    d = tmp_path / "w"
    shutil.copytree(tox.WEIGHTS_DIR, d)
    return d, d / tox.WEIGHT_FILES["ngram"]


def test_corrupt_weights_checksum(tmp_path):
    d, f = _weights_copy(tmp_path)
    raw = bytearray(f.read_bytes())
    raw[-10] ^= 0xFF  # flip bits in the tensor data: the header still parses
    f.write_bytes(bytes(raw))
    with pytest.raises(TunelabError, match="checksum"):
        tox.ToxicityClassifier("ngram", d)


def test_truncated_weights(tmp_path):
    d, f = _weights_copy(tmp_path)
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(TunelabError, match="not a readable safetensors"):
        tox.ToxicityClassifier("ngram", d)


def test_other_version_weights(tmp_path):
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open

    d, f = _weights_copy(tmp_path)
    with safe_open(str(f), framework="numpy") as h:
        meta = dict(h.metadata())
    save_file(load_file(str(f)), str(f), metadata={**meta, "format_version": "99"})
    with pytest.raises(TunelabError, match="version '99'"):
        tox.ToxicityClassifier("ngram", d)


def test_wrong_shape_weights(tmp_path):
    d, f = _weights_copy(tmp_path)
    tox.save_weights(f, "ngram", {"weight": np.zeros(10), "bias": np.zeros(1)}, {"dim": 65536})
    with pytest.raises(TunelabError, match="expected weight"):
        tox.ToxicityClassifier("ngram", d)


def test_cli_corrupt_weights_exit_2_no_traceback(tmp_path, capsys):
    from tunelab.cli import main

    d, f = _weights_copy(tmp_path)
    f.write_bytes(b"not a safetensors file at all")
    src = tmp_path / "p.jsonl"
    src.write_text(json.dumps({"output": "hello"}) + "\n")
    with pytest.raises(SystemExit) as e:
        main(["safety", "scan", str(src), "--out", str(tmp_path / "o.jsonl"),
              "--backend", "ngram", "--weights", str(d)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "ngram_logreg.safetensors" in err and "Traceback" not in err
    assert not (tmp_path / "o.jsonl").exists()


def test_cli_scan_end_to_end(tmp_path, capsys):
    from tunelab.cli import main

    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps({"prompt": "p", "output": t}) + "\n" for t in ["hello", "thanks"]))
    with pytest.raises(SystemExit) as e:
        main(["safety", "scan", str(src), "--out", str(tmp_path / "o.jsonl"), "--backend", "ngram"])
    assert e.value.code == 0
    assert "expected_max_toxicity" in capsys.readouterr().out
    rows = [json.loads(l) for l in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(0 <= r["toxicity"] <= 1 for r in rows)


@pytest.mark.parametrize("backend", ["ngram", pytest.param("minilm", marks=needs_minilm),
                                     pytest.param("ensemble", marks=needs_minilm)])
def test_everyday_text_is_not_flagged(backend):
    # guards the background negatives: without them ordinary text scored about 0.5-0.7
    texts = ["Thank you, have a nice day!", "The train to Boston leaves at nine tomorrow morning.",
             "Please summarise the attached quarterly sales report in three bullet points."]
    assert max(tox.ToxicityClassifier(backend).score(texts)) < 0.5
