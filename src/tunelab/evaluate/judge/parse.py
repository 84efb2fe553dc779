"""Reading the judge's answer strictly: a rating `[[7]]` or a verdict `[[A]]` / `[[B]]` / `[[C]]`.

Strict means: the bracketed form only (a bare "7/10" or "Answer A is better" is not read), a
rating must be a whole number from 1 to 10, and a text holding two different bracketed answers is
ambiguous. Anything else is None: the caller counts it as `unparsed`, never as a 0.
"""
from __future__ import annotations

import re
from typing import Optional

_RATING = re.compile(r"\[\[\s*([0-9]+(?:\.[0-9]+)?)\s*\]\]")
_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")


def parse_rating(text: str) -> Optional[int]:
    found = set(_RATING.findall(text or ""))
    if len(found) != 1:
        return None
    value = next(iter(found))
    if not value.isdigit() or not 1 <= int(value) <= 10:
        return None
    return int(value)


def parse_verdict(text: str) -> Optional[str]:
    """'A', 'B' or 'C' (a tie), as the judge wrote it in the order it was shown; None if unreadable."""
    found = set(_VERDICT.findall(text or ""))
    return next(iter(found)) if len(found) == 1 else None
