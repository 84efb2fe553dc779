"""Classifier v3 training: data loading deduplicates, calibration and threshold behave, a tiny
recipe round-trips through the weights files, and the shipped weights load and verify."""
import json

import numpy as np
import pytest

from tunelab.errors import TunelabError
from tunelab.safety import classifier_fit as cf
from tunelab.safety import toxicity as tox
from tunelab.safety import toxicity_data as td
from tunelab.safety import train_classifier as tc

# ---------------------------------------------------------------- data


def test_toxigen_is_deduplicated(shared_data):
    data = td.load_toxigen(shared_data / "toxigen")
    keys = [td.norm_key(t) for t in data.texts]
    assert len(keys) == len(set(keys))
    assert not any(t.endswith("\\n-") or t.startswith("-") for t in data.texts)
    assert set(data.groups) == set(td.TOXIGEN_GROUPS)
    # each file has 1,000 prompt lines built from a few dozen statements
    for g in td.TOXIGEN_GROUPS:
        n = sum(1 for x in data.groups if x == g)
        assert 5 < n < 200, (g, n)
    # trans has a hate file only
    assert {y for x, y in zip(data.groups, data.labels) if x == "trans"} == {1}


def test_toxigen_dedup_folds_case_and_space(tmp_path):
    (tmp_path / "hate_women_1k.txt").write_text(
        "- Women are X\\n- she  is y\\n-\n- women are x\\n- she is y\\n-\n")
    (tmp_path / "neutral_women_1k.txt").write_text("- she is y\\n- a calm fact\\n-\n")
    data = td.load_toxigen(tmp_path, groups=("women",))
    assert data.texts == ["Women are X", "she  is y", "a calm fact"]
    assert data.labels == [1, 1, 0]  # a statement in both files keeps the hate label


def test_missing_toxigen_file_one_line_error(tmp_path):
    with pytest.raises(TunelabError, match="hate_women_1k.txt not found; point data_dir at"):
        td.load_toxigen(tmp_path, groups=("women",))


def test_davidson_dedup_and_labels(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text(",count,hate_speech,offensive_language,neither,class,tweet\n"
                 "0,3,0,0,3,2,RT @abc: hello &amp; welcome\n"
                 "1,3,0,0,3,2,hello & welcome\n"
                 "2,3,3,0,0,0,a hateful tweet\n"
                 "3,3,0,3,0,1,an offensive tweet http://x.co/y\n")
    data = td.load_davidson(f)
    assert data.texts == ["hello & welcome", "a hateful tweet", "an offensive tweet http"]
    assert data.labels == [0, 1, 1] and data.groups == ["neither", "hate", "offensive"]
    f.write_text(",count,hate_speech,offensive_language,neither,class,tweet\n0,3,0,0,3,7,x\n")
    with pytest.raises(TunelabError, match=r"d.csv:2 has class 7"):
        td.load_davidson(f)


def test_davidson_real_file_counts(shared_data):
    data = td.load_davidson(shared_data / td.DAVIDSON_FILE)
    assert 24000 < len(data) <= 24783  # a few hundred exact duplicates once handles are masked
    assert len({td.norm_key(t) for t in data.texts}) == len(data)


def test_split_hash_is_stable():
    assert td.split_hash("Some Text", 1) == td.split_hash("some  text", 1)
    assert td.split_hash("some text", 1) != td.split_hash("some text", 2)
    assert 0.0 <= td.split_hash("x", 3) < 1.0


# ---------------------------------------------------------------- calibration and threshold


def test_ece_calibrated_vs_overconfident():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=20000)
    y = rng.uniform(size=20000) < p  # labels drawn at exactly the stated probability
    assert cf.ece(p, y) < 0.02
    over = np.where(p > 0.5, 1.0, 0.0)  # same ranking, claims certainty
    assert cf.ece(over, y) > 0.2


def test_platt_repairs_a_scaled_logit():
    rng = np.random.default_rng(1)
    z = rng.normal(size=5000) * 2
    y = (rng.uniform(size=5000) < cf.sigmoid(z)).astype(float)
    a, c = cf.platt(z * 4.0, y, np.ones(len(y)))  # over-confident by a factor 4
    assert a == pytest.approx(0.25, abs=0.05) and abs(c) < 0.1
    assert cf.ece(cf.sigmoid(a * z * 4 + c), y) < cf.ece(cf.sigmoid(z * 4), y)


def test_threshold_respects_everyday_fpr():
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.2, 0.65, 0.1, 0.1, 0.1])
    y = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    everyday = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1], dtype=bool)
    t, stats = cf.choose_threshold(p, y, np.ones(10), everyday, max_everyday_fpr=0.0)
    assert t > 0.65 and stats["val_everyday_fpr"] == 0.0  # 0.65 is everyday text: cut above it
    t2, _ = cf.choose_threshold(p, y, np.ones(10), everyday, max_everyday_fpr=1.0)
    assert t2 <= 0.3  # unconstrained, F1 takes the lowest toxic score


# ---------------------------------------------------------------- a tiny recipe, end to end


def test_tiny_recipe_round_trip(shared_data, tmp_path, monkeypatch):
    """Train the n-gram head on two groups + background (no Davidson, small), save, reload:
    the runtime classifier reproduces the training code's scores and threshold."""
    monkeypatch.setattr(tc, "N_BUCKETS", 1 << 12)
    corpus, split = tc.build_corpus(shared_data, shared_data / "toxigen", groups=("women", "asian"),
                                    n_background=80, davidson=False)
    X = tc.features(corpus.texts, None, ("ngram",))
    models = tc.fit_recipe(X, corpus, split, np.ones(len(corpus), dtype=bool))
    m = models["ngram"]
    assert m["C"] in tc.C_GRID and 0.05 <= m["threshold"] <= 0.95
    assert np.isfinite(m["val_ece"]) and m["platt"][0] > 0
    tc.save_models(models, ["ngram"], tmp_path, tc.SEED)
    clf = tox.ToxicityClassifier("ngram", tmp_path)
    assert clf.threshold == pytest.approx(m["threshold"], abs=1e-4)
    rows = np.arange(20)
    expected = cf.sigmoid(tc.model_logits(models, "ngram", X, rows))
    assert np.allclose(clf.score([corpus.texts[i] for i in rows]), expected, atol=1e-5)


# ---------------------------------------------------------------- the shipped weights


@pytest.mark.parametrize("backend", ["ngram", pytest.param("minilm", marks=pytest.mark.skipif(
    not tox.minilm_available(), reason="embeddings extra not installed")), pytest.param(
    "ensemble", marks=pytest.mark.skipif(not tox.minilm_available(), reason="embeddings extra not installed"))])
def test_shipped_weights_load_and_verify(backend):
    clf = tox.ToxicityClassifier(backend)
    assert clf.meta["format_version"] == tox.FORMAT_VERSION
    assert 0.05 <= clf.threshold <= 0.95
    assert clf.signature.startswith(f"toxicity|backend:{backend}|format:{tox.FORMAT_VERSION}|weights:")
    metrics = json.loads((tox.WEIGHTS_DIR / tc.METRICS_FILE).read_text())
    # metrics.json was written by the same run as the weights: their file hashes agree
    import hashlib

    name = tox.WEIGHT_FILES[backend]
    assert metrics["weights"][name] == hashlib.sha256((tox.WEIGHTS_DIR / name).read_bytes()).hexdigest()
    assert metrics["models"][backend]["threshold"] == pytest.approx(clf.threshold, abs=1e-4)


def test_auto_backend_is_ensemble_with_minilm():
    expected = "ensemble" if tox.minilm_available() else "ngram"
    assert tox.ToxicityClassifier("auto").backend == expected


def test_unknown_backend_one_line():
    with pytest.raises(TunelabError, match="unknown toxicity backend 'bert'; use auto, ensemble"):
        tox.ToxicityClassifier("bert")


def test_scan_defaults_to_the_classifier_threshold(tmp_path):
    from tunelab.safety.scan import scan

    class Fixed:
        threshold = 0.8

        def score(self, texts):
            return [float(t) for t in texts]

    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in ("0.7", "0.85", "0.9", "0.1")))
    assert scan(src, classifier=Fixed())["toxic_fraction"] == pytest.approx(0.5)  # 0.85, 0.9
    assert scan(src, classifier=Fixed(), threshold=0.5)["toxic_fraction"] == pytest.approx(0.75)
