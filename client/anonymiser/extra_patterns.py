"""Patterns Presidio's own recognisers miss: SSNs and phone numbers named as such, 2-series,
dotted and 12- to 19-digit card numbers (the last named as a card), international phone numbers,
any scheme:// or bare ``www.`` link, @handles, a title and a surname ("Dr. Okafor"), "Town, ST"
places, and addresses in other languages' order."""

from __future__ import annotations

import re

from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from client.anonymiser.entities import CREDIT_CARD, LOCATION, PERSON, PHONE_NUMBER, STREET_ADDRESS, URL, US_SSN

_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|"
    "NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|DC"
)

# (entity, pattern, group holding the value)
_PATTERNS = (
    # "SSN 546219837", "social security number: 546 21 9837"
    (
        US_SSN,
        re.compile(
            r"(?i)\b(?:ssn|ss#|social security(?: number| no\.?)?)\D{0,25}?"
            r"\b(\d{3}[- ]?\d{2}[- ]?\d{4})\b"
        ),
        1,
    ),
    # "typed 546219837 into the SSN box"
    (US_SSN, re.compile(r"(?i)\b(\d{3}[- ]?\d{2}[- ]?\d{4})\b(?=\D{0,30}\b(?:ssn|social security)\b)"), 1),
    # Mastercard 2221-2720 (Luhn-checked below)
    (CREDIT_CARD, re.compile(r"\b(2(?:2[2-9]\d|[3-6]\d\d|7[01]\d|720)[- ]?\d{4}[- ]?\d{4}[- ]?\d{4})\b"), 1),
    # "+44 7700 900872": a plus, a country code and 8+ more digits (numbers the phone
    # library calls unassigned still identify someone)
    (PHONE_NUMBER, re.compile(r"(?<![\w+])(\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){2,5})(?!\d)"), 1),
    # "5451.6750.1992.0455": four groups of four with dots (Luhn-checked below)
    (CREDIT_CARD, re.compile(r"\b(\d{4}\.\d{4}\.\d{4}\.\d{4})\b"), 1),
    # "my phone # (555-0193)": a local seven-digit number named as a phone
    (PHONE_NUMBER, re.compile(r"(?i)\b(?:phone|tel|call|cell|mobile|text|fax)\b\D{0,30}?\b(\d{3}[-.]\d{4})\b"), 1),
    # any scheme://host/path, whatever the host (IP address, private or new top-level domain)
    (URL, re.compile(r"(?i)\b((?:https?|ftp)://[^\s()<>\"']+[^\s()<>\"'.,;:!?])"), 1),
    # "@riffraff_raquel": a social-media handle (not the middle of an e-mail address)
    (PERSON, re.compile(r"(?<![\w.@])(@[A-Za-z0-9_](?:[A-Za-z0-9_.]{1,28}[A-Za-z0-9_]))"), 1),
    # "Dr. Palfreyman", "Mrs Okafor": a title and a surname ("Dr Pepper" is kept by the gear filter)
    (PERSON, re.compile(r"\b(?:Dr|Mr|Mrs|Ms|Mx|Prof|Miss|Rev)\.?[ \t]+([A-Z][\w'’-]+(?:[ \t]+[A-Z][\w'’-]+)?)"), 1),
    # "card ending 589283955237", "refunded my card 4541945464329351642": 12 to 19 digits named as
    # a card (Luhn-checked below); Presidio's own pattern stops at 17 digits and wants an issuer prefix
    (
        CREDIT_CARD,
        re.compile(
            r"(?i)\b(?:card|visa|mastercard|amex|maestro|discover|debit|credit)\b\D{0,25}?\b(\d(?:[ -]?\d){11,18})\b"
        ),
        1,
    ),
    # "Clearwater, FL": a town and a US state code
    (LOCATION, re.compile(rf"\b([A-Z][a-z]+(?: (?:[A-Z][a-z]+|or|of|on|de|la)){{0,3}}, (?:{_STATES}))\b"), 1),
    # www.shop.example/path, any top-level domain
    (URL, re.compile(r"(?i)\b(www\.[a-z0-9-]+(?:\.[a-z0-9-]+)+(?:/[^\s()<>\"']*[^\s()<>\"'.,;:!?])?)"), 1),
    # "16 Rue des Lilas", "12 Calle del Sol", "Hauptstraße 5"
    (
        STREET_ADDRESS,
        re.compile(
            r"\b(\d{1,5}\s+(?:Rue|Via|Calle|Avenida|Av\.|Chemin|Piazza|Rua|Camino|"
            r"Place|Plaza)\s+(?:(?:de|des|du|la|le|del|di|da|dos|das)\s+|"
            r"[A-Z][\w'’-]*\s?){1,4})"
        ),
        1,
    ),
    (
        STREET_ADDRESS,
        re.compile(
            r"\b([A-Z][a-zäöüß]+(?:straße|strasse|weg|gasse|platz|laan|straat|"
            r"gade|vej|gatan)\s+\d{1,4}[a-z]?)\b"
        ),
        1,
    ),
)


def _luhn(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()][::-1]
    return sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(digits)) % 10 == 0


class ExtraPatternsRecognizer(EntityRecognizer):
    """Regular-expression spans for the cases in the module docstring."""

    def __init__(self) -> None:
        super().__init__(
            supported_entities=[US_SSN, CREDIT_CARD, PHONE_NUMBER, URL, STREET_ADDRESS, PERSON, LOCATION],
            name="privrec-extra-patterns",
            supported_language="en",
        )

    def load(self) -> None:  # noqa: D102
        pass

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Matches of every pattern whose entity was asked for."""
        results = []
        for entity, pattern, group in _PATTERNS:
            if entity not in entities:
                continue
            for match in pattern.finditer(text):
                value = match.group(group).rstrip()
                if entity == CREDIT_CARD and not _luhn(value):
                    continue
                if entity == PHONE_NUMBER and value[:1] == "+" and sum(c.isdigit() for c in value) < 9:
                    continue
                start = match.start(group)
                results.append(RecognizerResult(entity, start, start + len(value), 0.6))
        return results
