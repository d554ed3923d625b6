"""Product words from the item catalogue: what a proper noun in a review is, if not a name."""

from __future__ import annotations

import re
from collections.abc import Iterable

from common.schema import Item

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")


def product_words(items: Iterable[Item]) -> frozenset[str]:
    """Lower-cased words of every item's title and brand."""
    words: set[str] = set()
    for item in items:
        words.update(w.lower() for w in _WORD.findall(f"{item.title} {item.brand or ''}"))
    return frozenset(words)
