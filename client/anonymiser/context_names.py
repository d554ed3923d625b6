"""A recogniser for names a small NER model misses but the context gives away.

"my little sister bianca", "my buddy steve", "Thanks, Dave", "-- Cedric", "Silas's drumsticks",
"Maite and I":
a word tagged as a proper noun (or, right after a relation word, a noun) in these positions is
taken as a person's name, unless it is a gear brand or model.
"""

from __future__ import annotations

from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from spacy.lang.en.stop_words import STOP_WORDS

from client.anonymiser.entities import PERSON
from client.anonymiser.gear_terms import BRANDS, GEAR_NOUNS
from client.anonymiser.normalise import fold

RELATIONS = frozenset(
    """
sister brother son daughter wife husband friend buddy pal mate bandmate teacher instructor tutor
student kid kids dad mom mum father mother uncle aunt cousin nephew niece neighbor neighbour
grandson granddaughter grandpa grandma grandfather grandmother boyfriend girlfriend fiance fiancee
roommate coworker colleague partner luthier drummer guitarist bassist singer named called
""".split()
)
SIGN_OFFS = frozenset("thanks thank cheers regards best sincerely love thx -- - ~".split())
_NOT_NAMES = (
    STOP_WORDS
    | BRANDS
    | GEAR_NOUNS
    | frozenset(
        "amazon ebay walmart sweetwater reverb target costco thanks email mail ps visa mastercard amex "
        "discover diners jcb paypal venmo ugh wow oops yikes meh version firmware".split()
    )
)
_SIGNATURE_BEFORE = frozenset("- -- — ~ ! . ,".split())
_DASHES = frozenset("- -- — ~".split())


_DAYS = frozenset(
    "monday tuesday wednesday thursday friday saturday sunday january february march "
    "april may june july august september october november december".split()
)


class ContextNameRecognizer(EntityRecognizer):
    """PERSON spans from relation words, sign-offs and possessives (needs spaCy tokens).

    With ``product_words`` (every word of the item catalogue's titles and brands) it also takes
    any other capitalised proper noun that is neither a product word nor a known place as a
    name, at a lower score: a name the NER model missed is worse than a replaced model name.
    Words are compared lower-cased and accent-folded (``product_words`` and ``place_names``
    are expected in that form: :func:`~client.anonymiser.normalise.fold`).
    """

    def __init__(self, product_words: frozenset[str] = frozenset(), place_names: frozenset[str] = frozenset()) -> None:
        super().__init__(supported_entities=[PERSON], name="context-names", supported_language="en")
        self.product_words = product_words
        self.place_names = place_names

    def load(self) -> None:  # noqa: D102 - nothing to load
        pass

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Spans of likely names given their context."""
        if nlp_artifacts is None or nlp_artifacts.tokens is None or PERSON not in entities:
            return []
        doc = nlp_artifacts.tokens
        results = []
        for i, token in enumerate(doc):
            start = None
            prev = doc[i - 1] if i > 0 else None
            nxt = doc[i + 1] if i + 1 < len(doc) else None
            if prev is not None and prev.lower_ in RELATIONS and token.pos_ in ("PROPN", "NOUN"):
                start = i
            elif (
                prev is not None
                and token.pos_ == "PROPN"
                and (
                    (prev.lower_ in SIGN_OFFS and (prev.whitespace_ or prev.text not in _DASHES))  # not "M-Audio"
                    or (prev.text == "," and i > 1 and doc[i - 2].lower_ in SIGN_OFFS)
                )
            ):
                start = i
            elif token.pos_ == "PROPN" and nxt is not None and nxt.text in ("'s", "’s"):
                start = i
            elif (
                token.text[:1].isupper()
                and token.lower_ not in RELATIONS
                and nxt is not None
                and nxt.lower_ == "and"
                and i + 2 < len(doc)
                and doc[i + 2].text == "I"
            ):
                start = i  # "Maite and I used these at our wedding" (a first word: tagged anything)
            elif (
                prev is not None
                and prev.text in _SIGNATURE_BEFORE
                and prev.whitespace_
                and token.is_alpha
                and all(not t.is_alpha for t in doc[i + 1 :])
                and (prev.text in _DASHES or (token.text[:1].isupper() and token.pos_ == "PROPN"))
            ):
                start = i  # a one-word signature at the very end: "... - nate", "! Gwen"
            if start is None and self.product_words and self._unknown_proper_noun(token):
                start = i
            if start is None or not _name_like(token):
                continue
            end = i
            while end + 1 < len(doc) and doc[end + 1].pos_ == "PROPN" and _name_like(doc[end + 1]):
                end += 1
            span = doc[start : end + 1]
            results.append(RecognizerResult(PERSON, span.start_char, span.end_char, 0.6))
        return results

    def _unknown_proper_noun(self, token) -> bool:
        low = fold(token.lower_)
        # Not at a sentence start: there any capitalised word ("Refund", "Seller") looks proper.
        return (
            token.pos_ == "PROPN"
            and token.text[:1].isupper()
            and not token.text.isupper()
            and not token.is_sent_start
            and len(low) >= 3
            and low not in self.product_words
            and low not in self.place_names
            and low not in _DAYS
        )


def _name_like(token) -> bool:
    low = fold(token.lower_)
    return (
        token.is_alpha
        and len(token.text) >= 2
        and low not in _NOT_NAMES
        and not (low.endswith("s") and low[:-1] in _NOT_NAMES)
    )  # "Elixirs"
