"""Deny-list terms from the identifiers a device already knows about its user.

A device knows its user's display name ("Mike Turner", "A. Smith \"guitarmike\"", "jdawg_bass").
The whole name, each quoted nickname and each distinctive word of it (a first name alone:
"Thanks, Mike", "-- mike", "Mike's") are replaced wherever they occur in that user's own text,
whatever a model thinks. Generic words ("Amazon Customer", "Music Lover") are kept as whole
phrases only, so "customer" or "music" elsewhere in a review stays; a one-word name that is a
common word ("AT", "Me") is not matched at all (:func:`checkable` says so, for the counts).

Matching is case-insensitive and accent-folded ("zoe bronte" is "Zoë Brontë"), and a name of
several words also matches written as one handle or e-mail local part ("zoebronte",
"zoe_bronte77", "zoe.bronte"). The same matcher counts what is left after scrubbing
(:func:`count_own_names`), so the store's counts use the rules the scrubber used.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from spacy.lang.en.stop_words import STOP_WORDS

from client.anonymiser.entities import OWN_NAME
from client.anonymiser.normalise import fold, normalise

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
# Letters and digits end a word; an underscore does not ("mike_t" holds "mike").
_BEFORE, _AFTER = r"(?<![^\W_])", r"(?![^\W_])"
_HANDLE_GLUE = r"[\s._-]*"  # "zoebronte", "zoe.bronte", "zoe_bronte", "zoe - bronte"
_HANDLE_DIGITS = r"\d{0,4}"  # "zoebronte77"
_MIN_HANDLE_LETTERS = 6  # "A B" as "ab" would match everywhere


def own_name_terms(names: Iterable[str | None]) -> list[str]:
    """The phrases and words to remove for a user known by ``names`` (longest first)."""
    terms: set[str] = set()
    for name in _clean(names):
        terms.add(name)
        terms.update(q.strip() for q in _QUOTED.findall(name) if q.strip())
        unquoted = _QUOTED.sub(" ", name).strip(" ,")
        if unquoted:
            terms.add(unquoted)
        terms.update(distinctive_words(name))
    # A one-word name or nickname that is a common word ("AT", "Me", "Player") would replace
    # that word all through the user's text: like a generic word, it is not matched at all.
    return sorted((t for t in terms if len(t) >= 2 and _words_or_distinctive(t)), key=lambda t: (-len(t), t))


def _words_or_distinctive(term: str) -> bool:
    words = [w for w in _SPLIT.split(term) if w]
    return len(words) > 1 or _distinctive(term)


def distinctive_words(name: str) -> list[str]:
    """The words of ``name`` that identify on their own (not "Amazon", "Customer", "the")."""
    return [word for word in _SPLIT.split(normalise(name)) if _distinctive(word)]


def checkable(names: Iterable[str | None]) -> bool:
    """True when some word of ``names`` can be looked for on its own; a display name such as
    "Amazon Customer" or "J" gives nothing to check a review's sign-off against."""
    return any(distinctive_words(name) for name in _clean(names))


def _distinctive(word: str) -> bool:
    low = fold(word).lower()
    return len(low) >= 2 and any(c.isalpha() for c in low) and low not in STOP_WORDS and low not in GENERIC_WORDS


def _clean(names: Iterable[str | None]) -> list[str]:
    return [n for n in (normalise(name or "").strip() for name in names) if n]


def own_name_pattern(names: Iterable[str | None]) -> re.Pattern[str] | None:
    """One case-insensitive pattern for every identifier of ``names``, to run on
    :func:`~client.anonymiser.normalise.fold`-ed text (None when there is nothing to match)."""
    return _pattern(tuple(sorted(set(_clean(names)))))


@functools.lru_cache(maxsize=1024)
def _pattern(names: tuple[str, ...]) -> re.Pattern[str] | None:
    handles = set()
    for name in names:
        words = [fold(w) for w in _SPLIT.split(name) if w]
        if len(words) > 1 and distinctive_words(name) and sum(map(len, words)) >= _MIN_HANDLE_LETTERS:
            handles.add(_HANDLE_GLUE.join(map(re.escape, words)) + _HANDLE_DIGITS)
    terms = [re.escape(fold(t)) for t in own_name_terms(names)]
    if not terms:
        return None
    # Handles first: at one position the longest form wins ("zoe bronte" before "zoe").
    alternatives = sorted(handles, key=len, reverse=True) + terms
    return re.compile(rf"{_BEFORE}(?:{'|'.join(alternatives)}){_AFTER}", re.IGNORECASE)


def count_own_names(text: str, names: Iterable[str | None]) -> int:
    """Occurrences of the identifiers of ``names`` in ``text`` (normalised and folded as the
    scrubber sees it); one-character names ("T") are neither counted nor removed."""
    pattern = own_name_pattern(names)
    return len(pattern.findall(fold(normalise(text)))) if pattern and text else 0


class OwnNameRecognizer(EntityRecognizer):
    """OWN_NAME spans for one user's identifiers, matched on the folded text (offsets map 1:1)."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__(supported_entities=[OWN_NAME], name="own-names", supported_language="en")
        self.pattern = pattern

    def load(self) -> None:  # noqa: D102 - nothing to load
        pass

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Every match of the user's identifiers, at full confidence."""
        if OWN_NAME not in entities:
            return []
        return [RecognizerResult(OWN_NAME, m.start(), m.end(), 1.0) for m in self.pattern.finditer(fold(text))]


def own_name_recognizer(names: Iterable[str | None]) -> OwnNameRecognizer | None:
    """An ad-hoc Presidio recogniser for one user's own identifiers (None when there are none)."""
    pattern = own_name_pattern(names)
    return OwnNameRecognizer(pattern) if pattern else None
