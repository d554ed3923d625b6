"""Presidio's e-mail recogniser without its network look-up of the public suffix list."""

from __future__ import annotations

import functools
import re

import tldextract
from presidio_analyzer.predefined_recognizers import EmailRecognizer

_TLD = re.compile(r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}$")


@functools.lru_cache(maxsize=1)
def _extractor() -> tldextract.TLDExtract:
    # The suffix list snapshot that ships with tldextract; never fetched: a device must not
    # call out while it reads its user's text.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


class OfflineEmailRecognizer(EmailRecognizer):
    """Same patterns as Presidio's EmailRecognizer; validation against the bundled suffix list."""

    def validate_result(self, pattern_text: str) -> bool:
        """True when the domain ends in a known public suffix, or in any alphabetic label.

        Newer or private top-level domains missing from the snapshot still look like
        addresses to a reader; better to replace them than to leak them.
        """
        if _extractor()(pattern_text).fqdn:
            return True
        return bool(_TLD.search(pattern_text))
