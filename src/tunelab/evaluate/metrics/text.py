"""Text-matching metrics: exact_match, SQuAD f1, numeric answers, and output assertions.

All score one item in [0, 1]; with several references the best one counts (max over refs).

- `exact_match` options (all default off except strip): strip, ignore_case, ignore_punctuation,
  ignore_articles (a/an/the, English), normalize_numbers. Normalisers apply in this order:
  numbers, strip, case, punctuation, articles, then whitespace runs collapse to one space when
  any normaliser besides strip is on. Numbers first, because punctuation removal would turn
  "1,000.0" into "10000"; normalize_numbers drops thousands commas and trailing decimal zeros:
  "1,000.0" -> "1000", "2.50" -> "2.5", "-0.0" stays "-0".
- `f1`: SQuAD token F1 with SQuAD's own normalisation (lower, drop punctuation, drop a/an/the,
  collapse whitespace). If either side has no tokens, F1 is 1 when both are empty, else 0
  (the SQuAD v2 script's rule).
- `numeric_strict` / `numeric_flexible` (also `numeric` with option mode: strict|flexible):
  lm-evaluation-harness gsm8k semantics. strict takes the first match of
  `#### (\\-?[0-9\\.\\,]+)`; flexible the last match of `(-?[$0-9.,]{2,})|(-?[0-9]+)`; no match
  gives "[invalid]". Gold: the text after the last "#### " when present, else the whole
  reference. Both sides then drop ",", "$" and a trailing "." and compare case-insensitively
  as strings (lm-eval's regexes_to_ignore), so "1,000" == "1000" but "1000.00" != "1000"
  unless `as_number: true`, which compares the values as numbers.
- `contains` (needle, ignore_case), `regex` (pattern, flags "i"/"s"/"m"; re.search),
  `valid_json` (the whole output parses; `strip_fences: true` accepts a ```json fenced block),
  `json_schema` (schema: a dict, or a path to a .json file; valid JSON that validates).
"""
from __future__ import annotations

import collections
import json
import re
import string
from pathlib import Path
from typing import Any, Sequence

from tunelab.errors import TunelabError
from tunelab.evaluate.metrics.base import Metric
from tunelab.evaluate.metrics.registry import register

_PUNCT = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])-?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w])|(?<![\w.,])-?\d+\.\d+(?![\w])")


def _normalize_number(m: re.Match) -> str:
    text = m.group(0).replace(",", "")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def normalize_numbers(text: str) -> str:
    """'1,000.0' -> '1000', '3.50' -> '3.5'; integers without commas are left alone."""
    return _NUMBER.sub(_normalize_number, text)


@register("exact_match")
class ExactMatch(Metric):
    """1 if the normalised prediction equals a normalised reference, else 0."""

    description = "prediction equals a reference after the chosen normalisers"
    text_only = True  # scores (prediction, references) alone
    options_spec = {"strip": True, "ignore_case": False, "ignore_punctuation": False,
                    "ignore_articles": False, "normalize_numbers": False}
    options_help = {"strip": "drop leading/trailing whitespace",
                    "ignore_case": "lower-case both sides",
                    "ignore_punctuation": "remove ASCII punctuation",
                    "ignore_articles": "remove a/an/the",
                    "normalize_numbers": "1,000.0 -> 1000 before comparing"}

    def normalize(self, text: str) -> str:
        o = self.options
        if o["normalize_numbers"]:
            text = normalize_numbers(text)
        if o["strip"]:
            text = text.strip()
        if o["ignore_case"]:
            text = text.lower()
        if o["ignore_punctuation"]:
            text = text.translate(_PUNCT)
        if o["ignore_articles"]:
            text = _ARTICLES.sub(" ", text)
        if o["ignore_punctuation"] or o["ignore_articles"] or o["normalize_numbers"]:
            text = " ".join(text.split())
        return text

    def item_score(self, prediction: str, references: Sequence[str], item: dict) -> float:
        pred = self.normalize(prediction)
        return float(any(pred == self.normalize(r) for r in references))


def squad_normalize(text: str) -> str:
    """SQuAD's normalize_answer: lower, drop punctuation, drop articles, collapse whitespace."""
    text = text.lower().translate(_PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_f1(prediction: str, reference: str) -> float:
    pred, gold = squad_normalize(prediction).split(), squad_normalize(reference).split()
    if not pred or not gold:
        return float(pred == gold)
    common = collections.Counter(pred) & collections.Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


@register("f1")
class F1(Metric):
    """SQuAD token-overlap F1, max over references."""

    description = "SQuAD token F1 (SQuAD normalisation), max over references"
    text_only = True  # scores (prediction, references) alone

    def item_score(self, prediction: str, references: Sequence[str], item: dict) -> float:
        return max((squad_f1(prediction, r) for r in references), default=0.0)


# lm-evaluation-harness gsm8k.yaml filters (strict-match, flexible-extract) and exact_match's
# regexes_to_ignore, reproduced so scores are comparable.
STRICT_RE = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_IGNORE = [re.compile(r","), re.compile(r"\$"), re.compile(r"(?s).*#### "), re.compile(r"\.$")]
INVALID = "[invalid]"


def extract_number(text: str, mode: str) -> str:
    """lm-eval's RegexFilter: strict = first `#### n`, flexible = last number-like match."""
    regex, select = (STRICT_RE, 0) if mode == "strict" else (FLEXIBLE_RE, -1)
    matches = regex.findall(text)
    if not matches:
        return INVALID
    match = matches[select]
    if isinstance(match, tuple):  # alternation: take the group that matched
        match = next((g for g in match if g), "")
        if not match:
            return INVALID
    return match.strip()


def _clean(text: str) -> str:
    for rx in _IGNORE:
        text = rx.sub("", text)
    return text.strip().lower()


def gold_number(reference: str) -> str:
    """GSM8K gold: the text after the last '#### ' when present, else the whole reference."""
    return _clean(reference)


class _NumericBase(Metric):
    mode = "strict"
    text_only = True  # scores (prediction, references) alone
    options_help = {"as_number": "compare as numbers (1000.00 == 1000) instead of lm-eval's string match"}

    def _equal(self, pred: str, gold: str) -> bool:
        if pred == gold:
            return True
        if self.options["as_number"]:
            try:
                return float(pred) == float(gold)
            except ValueError:
                return False
        return False

    def item_score(self, prediction: str, references: Sequence[str], item: dict) -> float:
        pred = _clean(extract_number(prediction, self.mode))
        return float(any(self._equal(pred, gold_number(r)) for r in references))


@register("numeric_strict")
class NumericStrict(_NumericBase):
    description = "GSM8K strict-match: the number after '#### ' (lm-eval semantics)"
    mode = "strict"
    options_spec = {"as_number": False}


@register("numeric_flexible")
class NumericFlexible(_NumericBase):
    description = "GSM8K flexible-extract: the last number in the output (lm-eval semantics)"
    mode = "flexible"
    options_spec = {"as_number": False}


@register("numeric")
class Numeric(_NumericBase):
    description = "numeric answer match; mode strict ('#### n') or flexible (last number)"
    options_spec = {"mode": "strict", "as_number": False}
    options_help = {"mode": "strict | flexible", **_NumericBase.options_help}

    def _check_options(self) -> None:
        if self.options["mode"] not in ("strict", "flexible"):
            raise TunelabError(f"metric 'numeric': option 'mode' must be strict or flexible, got {self.options['mode']!r}")
        self.mode = self.options["mode"]


@register("contains")
class Contains(Metric):
    description = "1 if the output contains the needle"
    text_only = True  # scores (prediction, references) alone
    options_spec = {"needle": None, "ignore_case": False}
    options_help = {"needle": "text that must appear (default: the reference)", "ignore_case": "case-insensitive"}

    def item_score(self, prediction: str, references: Sequence[str], item: dict) -> float:
        needles = [self.options["needle"]] if self.options["needle"] is not None else list(references)
        if self.options["ignore_case"]:
            prediction, needles = prediction.lower(), [n.lower() for n in needles]
        return float(any(n in prediction for n in needles))


@register("regex")
class Regex(Metric):
    description = "1 if re.search(pattern, output) matches"
    text_only = True  # scores (prediction, references) alone
    options_spec = {"pattern": None, "flags": ""}
    options_help = {"pattern": "a Python regular expression (required)", "flags": "any of i, s, m"}

    def _check_options(self) -> None:
        if not self.options["pattern"]:
            raise TunelabError("metric 'regex': option 'pattern' is required, e.g. {regex: {pattern: '^Yes'}}")
        flags = 0
        for ch in self.options["flags"]:
            if ch not in "ism":
                raise TunelabError(f"metric 'regex': option 'flags' takes i, s, m; got {ch!r}")
            flags |= {"i": re.IGNORECASE, "s": re.DOTALL, "m": re.MULTILINE}[ch]
        try:
            self._rx = re.compile(self.options["pattern"], flags)
        except re.error as e:
            raise TunelabError(f"metric 'regex': option 'pattern' is not a valid regex ({e})") from None

    def item_score(self, prediction: str, references: Sequence[str], item: dict) -> float:
        return float(self._rx.search(prediction) is not None)


_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n\s*```\s*$", re.DOTALL)


def parse_json(text: str, strip_fences: bool) -> tuple[bool, Any]:
    if strip_fences:
        m = _FENCE.match(text)
        if m:
            text = m.group(1)
    try:
        return True, json.loads(text)
    except ValueError:
        return False, None


@register("valid_json")
class ValidJson(Metric):
    description = "1 if the whole output parses as JSON"
    text_only = True  # scores (prediction, references) alone
    options_spec = {"strip_fences": False}
    options_help = {"strip_fences": "accept a ```json fenced block"}

    def item_score(self, prediction: str, references: Sequence[str], item: dict) -> float:
        return float(parse_json(prediction, self.options["strip_fences"])[0])


@register("json_schema")
class JsonSchema(Metric):
    description = "1 if the output is JSON that validates against the schema"
    text_only = True  # scores (prediction, references) alone
    options_spec = {"schema": None, "strip_fences": False}
    options_help = {"schema": "a JSON Schema object, or a path to a .json file (required)",
                    "strip_fences": "accept a ```json fenced block"}

    def _check_options(self) -> None:
        import jsonschema

        schema = self.options["schema"]
        if schema is None:
            raise TunelabError("metric 'json_schema': option 'schema' is required (a mapping or a .json path)")
        if isinstance(schema, (str, Path)):
            try:
                schema = json.loads(Path(schema).read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise TunelabError(f"metric 'json_schema': cannot read schema file {schema}: {e}") from None
        cls = jsonschema.validators.validator_for(schema)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as e:
            raise TunelabError(f"metric 'json_schema': option 'schema' is not a valid JSON Schema: {e.message}") from None
        self._validator = cls(schema)

    def signature_options(self) -> dict[str, Any]:
        import hashlib

        # The schema itself is too long for a signature line: hash it.
        blob = json.dumps(self._validator.schema, sort_keys=True).encode()
        return {"schema": "sha256:" + hashlib.sha256(blob).hexdigest()[:12],
                "strip_fences": self.options["strip_fences"]}

    def item_score(self, prediction: str, references: Sequence[str], item: dict) -> float:
        ok, obj = parse_json(prediction, self.options["strip_fences"])
        return float(ok and self._validator.is_valid(obj))
