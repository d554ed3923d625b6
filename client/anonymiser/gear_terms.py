"""Brands and models of music gear that a named-entity model mistakes for people or places.

"Les Paul", "Ernie Ball", "Marshall" or "Dr Pepper" are products, not persons. A PERSON or
LOCATION span made only of these words is kept. Brand names that are also common first or
last names ("Martin", "Taylor", "Dean") are kept only when a gear word or a model number
follows ("Martin strings", "Taylor 214ce"); alone they are treated as names: a missed
name costs privacy, a replaced brand only a little signal.
"""

from __future__ import annotations

import re

from client.anonymiser.normalise import fold

BRANDS = frozenset(
    """
fender gibson epiphone squier ibanez yamaha boss shure marshall ernie ball d'addario daddario
dunlop elixir snark kyser planet waves seymour duncan dimarzio emg ludwig zildjian sabian vic firth
behringer korg roland moog casio nord akai alesis audio-technica sennheiser electro-harmonix mxr
tc electronic digitech vox orange blackstar peavey line hughes kettner mogami hosa monster
gretsch rickenbacker schecter esp prs washburn ovation takamine seagull hohner mackie focusrite
presonus tascam zoom rode neumann akg boveda gator hercules on-stage dr pepper les paul stratocaster
strat telecaster tele jazzmaster jaguar mustang precision sg explorer flying v firebird thunderbird
les-paul wah cry baby big muff tube screamer rat fuzz face klon centaur bigsby floyd rose grover
gotoh schaller hipshot graph tech tusq fishman lr baggs l.r. baggs mesa boogie ampeg hartke
ashdown gallien krueger ga-ck pignose danelectro silvertone harmony kay dobro resonator ukulele
kala lanikai cordoba alvarez guild breedlove eastman loar godin simon patrick art lutherie yorkville
cort jay turser rogue savarez augustine hannabach la bella rotosound ghs dean markley curt mangan
pyramid thomastik infeld pirastro kaplan evans remo aquarian promark regal tip meinl paiste pearl
tama dw sonor mapex gretsch premier gibraltar pdp sm57 sm58 beta tu-3 dd-7 ds-1 rc-3 tuner
mel bay alfred hal leonard suzuki peterson strobostomp hiscox jensen celestion creamback rockerverb
crush jcm jcm800 plexi twin reverb deluxe princeton bassman blues junior hot rod elixirs nanoweb
polyweb optiweb slinky cobalt paradigm kyser capo shubb g7th paige thalia d'andrea clayton wegen
bluechip v-picks chicken picker jim fender's gibson's martin's taylor's yamaha's
""".split()
)

# Brands that are also everyday names: kept only when a gear word or model number follows.
AMBIGUOUS = frozenset(
    "martin taylor dean jackson marshall mesa harmony guild simon patrick kay evans rose paul".split()
)
GEAR_NOUNS = frozenset(
    """
guitar guitars acoustic electric bass strings string amp amps amplifier pedal pedals pick picks
capo tuner cable cables mic microphone head cabinet combo neck body pickup pickups bridge case
gig bag stand strap model series headstock fretboard custom standard deluxe special classic
jack input output regular slinky super power hybrid extra light medium heavy mini jazz
""".split()
)

TITLES = frozenset("dr mr mrs ms mx prof miss rev".split())  # "Dr. Palfreyman" is a person ("Dr Pepper": BRANDS)
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'.-]*")
_NEXT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9-]*)")
_PREV = re.compile(r"([A-Za-z][A-Za-z'.-]*)\s+$")


def _norm(word: str) -> str:
    word = fold(word).lower().rstrip(".'")  # "D’Addario" is "d'addario"
    return word.removesuffix("'s")


def is_gear_phrase(span: str, following: str = "", preceding: str = "", text: str = "") -> bool:
    """True when ``span`` names a gear brand or model (see module docstring).

    ``preceding``/``following`` are the text around the span ("Les" before "Paul"); ``text``
    the whole review, where "Taylor 314ce" earlier makes a later "the Taylor" a guitar.
    """
    words = [_norm(w) for w in _WORD.findall(fold(span))]
    if words and (
        words[0] in BRANDS
        and words[0] not in AMBIGUOUS
        or (words[0] in AMBIGUOUS and len(words) > 1 and any(c.isdigit() for c in span))
    ):
        return True  # "Ernie Ball Regular Slinky", "Zildjian A Custom", "Marshall DSL40"
    before = _PREV.search(fold(preceding[-60:]))
    if (
        before
        and len(words) == 1
        and _norm(before.group(1)) not in TITLES
        and is_gear_phrase(f"{before.group(1)} {span}")
    ):
        return True  # "Paul" of "Les Paul"
    if (
        len(words) == 1
        and words[0] in AMBIGUOUS
        and text
        and re.search(rf"\b{re.escape(span.strip())}\s+(?:\S*\d|(?:{'|'.join(GEAR_NOUNS)})\b)", text, re.IGNORECASE)
    ):
        return True
    if not words or not all(w in BRANDS or w in AMBIGUOUS or w in GEAR_NOUNS for w in words):
        return False
    if any(w in BRANDS and w not in AMBIGUOUS for w in words):
        return True
    nxt = _NEXT.match(fold(following[:60]))
    return nxt is not None and (nxt.group(1).lower() in GEAR_NOUNS or any(c.isdigit() for c in nxt.group(1)))
