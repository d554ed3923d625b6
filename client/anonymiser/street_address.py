"""A Presidio recogniser for street addresses ("1428 Elm Street", "221B Baker St, Apt 4"), with the
town, region, country and postcode that follow after a comma or on the next lines."""

from __future__ import annotations

from presidio_analyzer import Pattern, PatternRecognizer

from client.anonymiser.entities import STREET_ADDRESS

_SUFFIXES = (
    "Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Way|"
    "Terrace|Terr?|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Square|Sq|Trail|Trl|Pike|Alley|"
    "Crescent|Close|Row|Plaza|Loop|Run|Trace|Mews|Walk|Gardens|Grove|Ridge|Point|Pass|Path|"
    "Hollow|Landing|Commons|Green|Heights|View|Vista|Knoll|Bend|Cove"
)
# house number, optional direction, one to four name words (or an ordinal), a street type,
# then optionally a unit ("Apt 4", "Suite 200", "#12").
_ADDRESS = (
    r"\b\d{1,6}[A-Za-z]?\s+"
    r"(?:(?:[NSEW]\.?|North|South|East|West)\s+)?"
    r"(?:(?:\d{1,3}(?:st|nd|rd|th)|[A-Z][A-Za-z'.-]*)\s+){1,4}"
    rf"(?:{_SUFFIXES})\b\.?"
    r"(?:,?\s*(?:Apartment|Building|Suite|Floor|Flat|Unit|Room|Bldg|Apt|Ste|Fl|Rm|#)\.?\s*#?[A-Za-z0-9-]+)?"
    # then the town, region, country and postcode after a comma or a line break: "..., EGMERE",
    # "...\nToronto, ON 35487", "...\nKOLONGA\n, QLD\n Australia 90330"
    r"(?:[ \t]*[,\n][\s,]*[A-Z][\w'’-]*(?:[ \t]+[A-Z][\w'’-]*){0,2}(?:[ \t]+\d{3,6})?){0,4}"
)


class StreetAddressRecognizer(PatternRecognizer):
    """Finds house-number + street-name + street-type addresses, with an optional unit."""

    PATTERNS = [Pattern("street address", _ADDRESS, 0.6)]
    CONTEXT = [
        "address",
        "live",
        "lives",
        "ship",
        "shipped",
        "deliver",
        "delivered",
        "street",
        "shop",
        "store",
        "located",
        "at",
    ]

    def __init__(self) -> None:
        super().__init__(
            supported_entity=STREET_ADDRESS,
            patterns=self.PATTERNS,
            context=self.CONTEXT,
            supported_language="en",
            global_regex_flags=0,
        )  # case matters: names are capitalised
