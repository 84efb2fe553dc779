import os

import pytest

from tunelab.errors import TunelabError
from tunelab.safety.lexicon import Lexicon, load_lexicon


def test_exact_terms_word_boundaries_case_and_multiword(tmp_path):
    p = tmp_path / "terms"
    p.write_text("# comment\nass\nhot pocket\n\nS&M\nbad word\n", encoding="utf-8")
    lex = load_lexicon(p)
    assert len(lex) == 4
    # "class" and "assess" must not match "ass"; multi-word matches across extra whitespace
    text = "This CLASS will assess... an ASS; a Hot   Pocket and s&m, then a bad word and a hot pocket."
    assert lex.hits(text) == ["ass", "hot pocket", "s&m", "bad word"]
    assert lex.hits("nothing here, bad-wordy") == []
    assert lex.hits("") == []


def test_longer_term_wins_over_contained_term():
    lex = Lexicon(["girls", "2 girls 1 cup"])
    assert lex.hits("about 2 girls 1 cup") == ["2 girls 1 cup"]


def test_missing_lexicon_is_one_line_error(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(TunelabError, match="nope.txt") as e:
        load_lexicon(missing)
    assert "\n" not in str(e.value)


def test_directory_and_binary_lexicon_are_errors(tmp_path):
    with pytest.raises(TunelabError, match="cannot read lexicon"):
        load_lexicon(tmp_path)
    bad = tmp_path / "bin"
    bad.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(TunelabError, match="bin"):
        load_lexicon(bad)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of permissions")
def test_unreadable_lexicon(tmp_path):
    p = tmp_path / "locked"
    p.write_text("x\n")
    p.chmod(0)
    with pytest.raises(TunelabError, match="locked"):
        load_lexicon(p)


def test_empty_lexicon_is_error(tmp_path):
    p = tmp_path / "empty"
    p.write_text("\n# only a comment\n")
    with pytest.raises(TunelabError, match="no terms"):
        load_lexicon(p)


def test_ldnoobw_loads(shared_data):
    lex = load_lexicon(shared_data / "ldnoobw" / "en")
    assert len(lex) > 300
    assert lex.hits("a perfectly polite sentence about classes and assessments") == []
