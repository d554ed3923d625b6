"""The client's local store: its users' anonymised reviews, encrypted at rest.

A store is one file in the chunked AES-256-GCM format of :mod:`client.encryption`. Inside is
JSON lines: a header line with the store's metadata (anonymiser mode, PII counts, pseudonym
key), then one line per review. Users appear only under keyed pseudonyms; display names are
dropped. The store is decrypted into memory only; nothing is written in plain text.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.encryption import EncryptionError, KdfLimits, KdfSettings, Secret, iter_decrypted, write_encrypted
from common.schema import Review

log = logging.getLogger(__name__)

STORE_FORMAT = 2  # 2: a privacy ledger and a policy are created beside every store
_HEADER_KEY = "privrec-store"


class StoreError(ValueError):
    """A local store cannot be read or written (wrong key, damaged, wrong format)."""


@dataclass(frozen=True)
class StoreMetadata:
    """What a store holds and how it was made; counts only, never the strings found."""

    anonymiser: str  # "ner:<spaCy model>" or "pattern-only"
    pii_counts: dict[str, int]
    num_users: int
    num_reviews: int
    own_names: dict[str, int] = field(default_factory=dict)  # found / remaining occurrences
    source: dict[str, Any] = field(default_factory=dict)  # file names and record counts
    created: str = ""
    warnings: tuple[str, ...] = ()
    pseudonym_key: str = ""  # hex; keys HMAC-SHA256 pseudonyms of user ids

    def public(self) -> dict[str, Any]:
        """The metadata without the pseudonym key (for reports and ``client inspect``)."""
        out = {k: v for k, v in self.__dict__.items() if k != "pseudonym_key"}
        out["warnings"] = list(self.warnings)
        return out


def new_pseudonym_key() -> str:
    """A fresh random key for user pseudonyms."""
    return secrets.token_hex(32)


def pseudonym(user_id: str, key: str) -> str:
    """Keyed pseudonym of ``user_id``: stable under one key, not reversible without it."""
    digest = hmac.new(bytes.fromhex(key), user_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return "u" + digest[:20]


@dataclass(frozen=True)
class LocalStore:
    """A decrypted store in memory: metadata and the anonymised, pseudonymised reviews."""

    path: Path
    metadata: StoreMetadata
    reviews: list[Review]

    @classmethod
    def write(
        cls,
        path: str | Path,
        metadata: StoreMetadata,
        reviews: Iterable[Review],
        secret: Secret,
        *,
        kdf: KdfSettings | None = None,
        force: bool = False,
    ) -> int:
        """Encrypt ``reviews`` to ``path`` atomically; an existing store is kept unless ``force``."""

        def lines() -> Iterator[bytes]:
            yield _dumps(
                {_HEADER_KEY: STORE_FORMAT, "metadata": metadata.__dict__ | {"warnings": list(metadata.warnings)}}
            )
            for r in reviews:
                yield _dumps(
                    {
                        "user": r.user_id,
                        "item": r.item_id,
                        "rating": r.rating,
                        "time": r.timestamp,
                        "summary": r.summary,
                        "text": r.text,
                    }
                )

        try:
            return write_encrypted(path, lines(), secret, kdf=kdf, force=force)
        except EncryptionError as err:
            raise StoreError(str(err)) from None

    @classmethod
    def open(cls, path: str | Path, secret: Secret, *, kdf_limits: KdfLimits | None = None) -> LocalStore:
        """Decrypt and parse the store at ``path`` (in memory only)."""
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"{path}: no local store there; create one with `privrec client prepare --out {path} ...`")
        try:
            raw = b"".join(iter_decrypted(path, secret, limits=kdf_limits))
        except EncryptionError as err:
            raise StoreError(str(err)) from None
        lines = raw.split(b"\n")
        try:
            header = json.loads(lines[0])
            if header.get(_HEADER_KEY) not in (1, STORE_FORMAT):
                raise StoreError(
                    f"{path}: store format {header.get(_HEADER_KEY)!r} is not "
                    f"supported (this PrivRec reads format {STORE_FORMAT}); "
                    f"prepare the store again"
                )
            meta = dict(header["metadata"])
            meta["warnings"] = tuple(meta.get("warnings", ()))
            metadata = StoreMetadata(**meta)
            reviews = [_review(json.loads(line)) for line in lines[1:] if line]
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            if isinstance(err, StoreError):
                raise
            raise StoreError(
                f"{path}: decrypted but its content is malformed ({err}); prepare the store again"
            ) from None
        return cls(path=path, metadata=metadata, reviews=reviews)


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def _review(row: dict[str, Any]) -> Review:
    return Review(
        user_id=row["user"],
        item_id=row["item"],
        rating=float(row["rating"]),
        timestamp=int(row["time"]),
        summary=row["summary"],
        text=row["text"],
    )
