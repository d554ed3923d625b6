"""One readable, normalised form of review text, and an accent-folded view of it for matching.

Reviews arrive with personal data in forms no pattern expects: ``212&#45;555&#45;0147`` (HTML
entities), ``Mike<br />Turner`` (tags), full-width digits, a zero-width space inside a name,
or a name typed without its accents ("zoe bronte" for "Zoë Brontë").

* :func:`normalise` is what the scrubber scans and what the store keeps: character references
  decoded (only complete ones, ``&#45;`` or ``&lt;``: "AT&T" and "&notes=" stay as written),
  HTML tags replaced by a space, Unicode NFKC, invisible format characters dropped. It is
  idempotent, so text scrubbed once can be scrubbed again.
* :func:`fold` is for *matching only*: every character maps to exactly one character ("ë" to
  "e", "’" to "'"), so an offset found in ``fold(text)`` is the same offset in ``text`` and
  the text kept still reads "Zoë".
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata

# A complete character reference: decimal, hexadecimal or named, with its semicolon.
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
# Real HTML tag names only, so "<3", "<<<", "-> Photos <-" and the scrubber's own
# "<PERSON>" tokens are text, not markup.
_TAG_NAMES = (
    "a|abbr|b|big|blockquote|body|br|center|cite|code|dd|del|div|dl|dt|em|embed|font|h[1-6]|head|hr|"
    "html|i|iframe|img|ins|li|link|meta|object|ol|p|param|pre|q|s|script|small|source|span|strike|"
    "strong|style|sub|sup|table|tbody|td|th|thead|title|tr|tt|u|ul|video|wbr"
)
_TAG = re.compile(rf"<!--.*?-->|</?(?:{_TAG_NAMES})(?:\s[^<>]{{0,500}})?/?>", re.IGNORECASE | re.DOTALL)
# Zero-width and soft-hyphen characters a name can hide behind ("Zo\u200bë").
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u180e\u200b\u200c\u200d\u2060\ufeff"))
# Typographic punctuation and letters without a decomposition, folded one to one.
_FOLD_EXTRA = str.maketrans("’‘‛ʼ`´“”„‐‑‒–—øØłŁđĐħĦı", "''''''\"\"\"-----oOlLdDhHi")
# "&amp;#45;" needs two passes, one per level of encoding; text encoded more deeply than this is
# left partly encoded (and then not idempotent): no real review is.
_MAX_PASSES = 16


def normalise(text: str) -> str:
    """``text`` with character references decoded, tags replaced by a space, NFKC applied and
    invisible characters dropped; repeated until nothing changes (so it is idempotent)."""
    for _ in range(_MAX_PASSES):
        out = _normalise_once(text)
        if out == text:
            break
        text = out
    return text


def _normalise_once(text: str) -> str:
    text = _ENTITY.sub(lambda m: html.unescape(m.group(0)), text)
    text = _TAG.sub(" ", text).translate(_INVISIBLE)
    return unicodedata.normalize("NFKC", text)


def fold(text: str) -> str:
    """``text`` with accents and typographic punctuation folded, one character for one
    ("Zoë Brontë’s" → "Zoe Bronte's"), for matching; ``len(fold(t)) == len(t)`` always."""
    if text.isascii():
        return text
    return "".join(map(_fold_char, text))


@functools.lru_cache(maxsize=8192)
def _fold_char(char: str) -> str:
    if char.isascii():
        return char
    extra = char.translate(_FOLD_EXTRA)
    if extra != char:
        return extra
    base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
    return base if len(base) == 1 else char  # "ß", "æ", "ﬁ": kept rather than shifting offsets
