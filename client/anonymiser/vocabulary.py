"""Product words from the item catalogue: what a proper noun in a review is, if not a name."""

from __future__ import annotations

import re
from collections.abc import Iterable

from client.anonymiser.normalise import fold, normalise
from common.schema import Item

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")


def product_words(items: Iterable[Item]) -> frozenset[str]:
    """Lower-cased, accent-folded words of every item's title and brand ("D&#39;Addario" is
    "d'addario", "Gretsch Falcón" gives "falcon")."""
    words: set[str] = set()
    for item in items:
        text = fold(normalise(f"{item.title} {item.brand or ''}"))
        words.update(w.lower() for w in _WORD.findall(text))
    return frozenset(words)
