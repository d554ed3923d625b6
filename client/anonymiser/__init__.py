"""On-device anonymisation of review text (Presidio), with counts per entity type."""

from client.anonymiser.entities import ALL_ENTITIES, REPLACEMENT
from client.anonymiser.scrubber import AnonymiserError, PiiScrubber, ScrubResult, resolve_model

__all__ = ["ALL_ENTITIES", "REPLACEMENT", "AnonymiserError", "PiiScrubber", "ScrubResult", "resolve_model"]
