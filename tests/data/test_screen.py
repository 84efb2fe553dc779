"""data.screen.drop_above: the data stage drops records scoring above a threshold (training's
data.max_toxicity), with the scorer passed in."""
from tunelab.data.records import Conversation
from tunelab.data.screen import conversation_text, drop_above


def fake_scorer(texts):
    return [0.9 if "BAD" in t else 0.1 for t in texts]


def _convs():
    return [Conversation("a", [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "BAD"}]),
            Conversation("b", text="fine text"),
            Conversation("c", text="BAD text")]


def test_drops_above_and_names_the_ids():
    kept, note = drop_above(_convs(), fake_scorer, 0.5)
    assert [c.id for c in kept] == ["b"]
    assert note == "data.max_toxicity=0.5: dropped 2 of 3 training records: a, c"


def test_threshold_is_strict_and_nothing_dropped_says_nothing():
    convs = _convs()
    kept, note = drop_above(convs, fake_scorer, 0.9)  # 0.9 is not above 0.9
    assert kept == convs and note == ""
    assert drop_above([], fake_scorer, 0.5) == ([], "")


def test_text_of_a_conversation():
    assert conversation_text(_convs()[0]) == "hi\nBAD"
    assert conversation_text(_convs()[1]) == "fine text"
