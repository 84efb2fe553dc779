"""readers.Skipped: one tally per data file of the records skip_bad left out, unreadable or refused
by the format, with the first one in file order (issue 34 item 1: a count and the first line for
every skip path, so each command can put them in its output and result file)."""
from __future__ import annotations

import json
import warnings

import pytest

from tunelab.data.load import load_conversations, load_rows
from tunelab.data.preference import load_pairs
from tunelab.data.readers import ReadReport, Skipped

OK = json.dumps({"prompt": "What is 2 plus 2?", "completion": "4"})
NO_COMPLETION = json.dumps({"prompt": "What is 3 plus 3?"})
PAIR = json.dumps({"prompt": "2 plus 2?", "chosen": "4", "rejected": "5"})
EMPTY_CHOSEN = json.dumps({"prompt": "2 plus 2?", "chosen": "", "rejected": "5"})


def _file(tmp_path, lines: list[str]):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _quiet(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the readers' own warning is not what these tests read
        return fn()


@pytest.mark.parametrize("lines, count, first", [
    # an unreadable line before a refused record, and the other way round: `first` follows the file
    ([OK, "not json", NO_COMPLETION, OK, "{", OK], 3, ":2: not valid JSON"),
    ([OK, NO_COMPLETION, OK, "not json", OK], 2, ":2: missing field 'completion'"),
])
def test_conversations_count_every_skip_and_keep_the_first_in_file_order(tmp_path, lines, count, first):
    path = _file(tmp_path, lines)
    tally = Skipped()
    convs = _quiet(lambda: load_conversations(path, skip_bad=True, report=ReadReport(skipped=tally)))
    assert len(convs) == len(lines) - count
    assert tally.count == count and tally.first.startswith(f"{path}{first}")
    assert tally.to_json() == {"count": count, "first": tally.first}
    assert tally.note("d.jsonl") == f"d.jsonl: skipped {count} bad record(s); first: {tally.first}"


def test_pairs_count_unreadable_lines_and_bad_pairs_together(tmp_path):
    path = _file(tmp_path, [PAIR, EMPTY_CHOSEN, "{bad", PAIR])
    tally = Skipped()
    pairs = _quiet(lambda: load_pairs(path, skip_bad=True, report=ReadReport(skipped=tally)))
    assert len(pairs) == 2
    assert tally.count == 2 and tally.first.startswith(f"{path}:2: the chosen answer is empty")


def test_a_second_pass_still_names_the_first_line_of_the_file(tmp_path):
    """compare's pool and a preference task read every line, then check the pairs: an unreadable line
    met in the first pass is not `first` when a bad pair sits above it."""
    from tunelab.data.readers import converted
    from tunelab.data.preference import to_pair

    path = _file(tmp_path, [PAIR, EMPTY_CHOSEN, "[1]", PAIR])
    tally = Skipped()
    rows = _quiet(lambda: load_rows(path, skip_bad=True, skipped=tally))
    assert tally.first.startswith(f"{path}:3: expected a JSON object")
    pairs = list(converted(iter(rows), lambda r: to_pair(r, None, None), spec=path, skip_bad=True, skip_setting="x",
                           warn=False, report=ReadReport(skipped=tally)))
    assert len(pairs) == 2 and tally.count == 2
    assert tally.first.startswith(f"{path}:2: the chosen answer is empty")


def test_rows_count_unreadable_lines(tmp_path):
    path = _file(tmp_path, [OK, "nope", OK, "[1]"])
    tally = Skipped()
    rows = _quiet(lambda: load_rows(path, skip_bad=True, skipped=tally))
    assert [r.line for r in rows] == [1, 3]
    assert tally.count == 2 and tally.first.startswith(f"{path}:2: not valid JSON")


def test_nothing_skipped_is_null_in_a_result_file(tmp_path):
    tally = Skipped()
    load_conversations(_file(tmp_path, [OK, OK]), skip_bad=True, report=ReadReport(skipped=tally))
    assert tally.count == 0 and tally.to_json() is None
