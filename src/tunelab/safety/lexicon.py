"""A user's term list (one term a line, e.g. LDNOOBW's `en`) matched as exact words.

Matching is case-insensitive on word boundaries, so "ass" does not fire inside "class"; a
multi-word term matches across any run of whitespace. Lines that are blank or start with '#' are
skipped. The lexicon complements the classifier: it flags explicit words, the classifier judges
meaning (and misses slurs it never saw in training).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from tunelab.errors import TunelabError


class Lexicon:
    def __init__(self, terms: list[str], source: str = "<terms>"):
        # One normalised spelling per term; lower-cased with collapsed spaces, first spelling kept.
        self.terms: list[str] = list(dict.fromkeys(" ".join(t.lower().split()) for t in terms if t.strip()))
        self.source = source
        if not self.terms:
            raise TunelabError(f"lexicon {source} has no terms; give a file with one term a line")
        # Longest first so "2 girls 1 cup" wins over a shorter term it contains.
        alts = "|".join(r"\s+".join(map(re.escape, t.split())) for t in sorted(self.terms, key=len, reverse=True))
        # (?<!\w) / (?!\w) rather than \b: terms may start or end with punctuation ("a$$").
        self._re = re.compile(rf"(?<!\w)(?:{alts})(?!\w)", re.IGNORECASE)

    def __len__(self) -> int:
        return len(self.terms)

    def hits(self, text: str) -> list[str]:
        """Distinct lexicon terms found in `text`, in order of first occurrence, as listed."""
        found = (" ".join(m.group(0).lower().split()) for m in self._re.finditer(text or ""))
        return list(dict.fromkeys(found))


def load_lexicon(path: str | os.PathLike) -> Lexicon:
    """Read a lexicon file; a missing, unreadable or non-UTF-8 file is a one-line error naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise TunelabError(f"cannot read lexicon {path} ({why}); give a UTF-8 text file with "
                           "one term a line") from None
    terms = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return Lexicon(terms, source=str(path))
