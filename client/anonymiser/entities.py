"""The kinds of personal data the scrubber looks for, as Presidio entity names."""

from __future__ import annotations

PERSON = "PERSON"
LOCATION = "LOCATION"
EMAIL_ADDRESS = "EMAIL_ADDRESS"
PHONE_NUMBER = "PHONE_NUMBER"
URL = "URL"
CREDIT_CARD = "CREDIT_CARD"
IBAN_CODE = "IBAN_CODE"
IP_ADDRESS = "IP_ADDRESS"
US_SSN = "US_SSN"
STREET_ADDRESS = "STREET_ADDRESS"
OWN_NAME = "OWN_NAME"  # the user's own known identifiers; replaced as <PERSON>

#: Entities found by patterns alone (no NLP model needed).
PATTERN_ENTITIES = (
    EMAIL_ADDRESS,
    PHONE_NUMBER,
    URL,
    CREDIT_CARD,
    IBAN_CODE,
    IP_ADDRESS,
    US_SSN,
    STREET_ADDRESS,
    OWN_NAME,
)
#: Entities that need a spaCy named-entity model.
NER_ENTITIES = (PERSON, LOCATION)
ALL_ENTITIES = NER_ENTITIES + PATTERN_ENTITIES

#: The replacement token of each entity (the type is kept, the value is gone).
REPLACEMENT = {entity: f"<{entity}>" for entity in ALL_ENTITIES} | {OWN_NAME: f"<{PERSON}>"}
