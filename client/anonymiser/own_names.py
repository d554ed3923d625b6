"""Deny-list terms from the identifiers a device already knows about its user.

A device knows its user's display name ("Mike Turner", "A. Smith \"guitarmike\"", "jdawg_bass").
The whole name, each quoted nickname and each distinctive word of it (a first name alone:
"Thanks, Mike") are replaced wherever they occur in that user's own text, whatever a
model thinks. Generic words ("Amazon Customer", "Music Lover") are kept as whole phrases
only, so "customer" or "music" elsewhere in a review stays.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from presidio_analyzer import PatternRecognizer
from spacy.lang.en.stop_words import STOP_WORDS

from client.anonymiser.entities import OWN_NAME

# Words common in display names that are not identifying on their own.
GENERIC_WORDS = frozenset(
    """
amazon customer kindle reader music musician lover fan player guitar guitarist bass bassist drummer
drum drums keys piano pianist singer vocalist band rock metal jazz blues country folk guy gal girl boy
man woman dad mom mother father papa mama grandpa grandma son daughter uncle aunt mr mrs ms miss dr
sir the of and a an in on at by jr sr ii iii iv teacher student pro studio audio sound gear review
reviewer buyer shopper user mister lady gentleman old young big little happy satisfied
tambourine keys synth uke ukulele banjo violin viola cello fiddle sax saxy harp flute trumpet horn
mandolin accordion harmonica strings string picker strummer bluegrass jazzy funky on off insta
""".split()
)

_SPLIT = re.compile(r"[\s\"'“”‘’()\[\],;:/|+&_.-]+")
_QUOTED = re.compile(r"[\"“](.+?)[\"”]")


def own_name_terms(names: Iterable[str | None]) -> list[str]:
    """The phrases and words to remove for a user known by ``names`` (longest first)."""
    terms: set[str] = set()
    for name in names:
        name = (name or "").strip()
        if not name:
            continue
        terms.add(name)
        terms.update(q.strip() for q in _QUOTED.findall(name) if q.strip())
        unquoted = _QUOTED.sub(" ", name).strip(" ,")
        if unquoted:
            terms.add(unquoted)
        for word in _SPLIT.split(name):
            if _distinctive(word):
                terms.add(word)
    return sorted((t for t in terms if len(t) >= 2), key=lambda t: (-len(t), t))


def _distinctive(word: str) -> bool:
    low = word.lower()
    return len(low) >= 2 and any(c.isalpha() for c in low) and low not in STOP_WORDS and low not in GENERIC_WORDS


def own_name_recognizer(names: Iterable[str | None]) -> PatternRecognizer | None:
    """An ad-hoc Presidio recogniser for one user's own identifiers (None when there are none)."""
    terms = own_name_terms(names)
    if not terms:
        return None
    return PatternRecognizer(
        supported_entity=OWN_NAME, deny_list=terms, deny_list_score=1.0, name="own-names", supported_language="en"
    )
