"""``privrec client prepare``: raw reviews in, an anonymised and encrypted local store out.

Steps, all on the device: validate the reviews against the item catalogue; replace personal data
in every summary and text (Presidio, plus the user's own display names); replace user ids by
keyed pseudonyms and drop display names; encrypt the result. Only counts are kept of what was
found. The raw file is never modified. Beside the store it starts the store's privacy ledger
and, unless one is already there, writes the strict default privacy policy for the owner to
review (``<store>.policy.toml``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from client.encryption import KdfSettings, Secret
from client.policy import PrivacyPolicy, policy_path
from client.privacy_ledger import LedgerKey, PrivacyLedger, ledger_path
from client.store import LocalStore, StoreMetadata, new_pseudonym_key, pseudonym
from common.data import load_dataset
from common.schema import Review

if TYPE_CHECKING:  # Presidio and spaCy load in seconds: imported where scrubbing starts
    from client.anonymiser import PiiScrubber

log = logging.getLogger(__name__)


class PrepareError(ValueError):
    """The client's input cannot become a store (e.g. no reviews at all)."""


@dataclass(frozen=True)
class Anonymised:
    """Reviews after scrubbing and pseudonymisation, with what was found (counts only)."""

    reviews: list[Review]
    pii_counts: Counter
    own_names: dict[str, int]
    seconds: float

    @property
    def texts_per_second(self) -> float:
        """Summaries and texts scrubbed per second."""
        return 2 * len(self.reviews) / self.seconds if self.seconds > 0 else 0.0


def anonymise_reviews(
    reviews: Sequence[Review], scrubber: PiiScrubber, *, pseudonym_key: str, progress: bool = True
) -> Anonymised:
    """Scrub summaries and texts, pseudonymise user ids, drop display names."""
    names: dict[str, set[str]] = defaultdict(set)
    for r in reviews:
        if r.reviewer_name:
            names[r.user_id].add(r.reviewer_name)
    texts = [t for r in reviews for t in (r.summary, r.text)]
    owners = [sorted(names[r.user_id]) for r in reviews for _ in (0, 1)]
    started = time.perf_counter()
    scrubbed = list(
        tqdm(
            scrubber.scrub_many(texts, owners),
            total=len(texts),
            unit="text",
            desc="anonymising",
            disable=not progress,
            leave=False,
        )
    )
    seconds = time.perf_counter() - started
    counts: Counter = Counter()
    for result in scrubbed:
        counts.update(result.counts)
    out = [
        replace(
            r,
            user_id=pseudonym(r.user_id, pseudonym_key),
            reviewer_name=None,
            summary=scrubbed[2 * i].text,
            text=scrubbed[2 * i + 1].text,
        )
        for i, r in enumerate(reviews)
    ]
    own = own_name_counts(texts, [s.text for s in scrubbed], owners, list(names.values()))
    return Anonymised(out, counts, own, seconds)


def own_name_counts(
    texts: Sequence[str], scrubbed: Sequence[str], owners: Sequence[Sequence[str]], users: Sequence[set[str]]
) -> dict[str, int]:
    """What ``client inspect`` shows of the users' own names (counts only, never the names).

    ``display-names-found`` / ``-remaining``: occurrences of each owner's identifiers (whole
    name, nicknames, distinctive words, handle form), accent-folded and case-insensitive as the
    scrubber matches them, before and after scrubbing. ``display-names-unchecked``: users whose
    display name has no word that can be looked for alone ("Amazon Customer", "J"), so a
    sign-off with their real name could be neither removed nor counted here.
    """
    from client.anonymiser.own_names import checkable, count_own_names

    return {
        "users-with-display-name": len(users),
        "display-names-unchecked": sum(not checkable(u) for u in users),
        "display-names-found": sum(count_own_names(t, n) for t, n in zip(texts, owners, strict=True)),
        "display-names-remaining": sum(count_own_names(t, n) for t, n in zip(scrubbed, owners, strict=True)),
    }


def build_metadata(anonymised: Anonymised, scrubber: PiiScrubber, *, pseudonym_key: str, source: dict) -> StoreMetadata:
    """Store metadata for ``anonymised``; warns in it when names and places were not looked for
    and when users' own names are still in the text."""
    warnings: tuple[str, ...] = ()
    if scrubber.model_name is None:
        warnings = (
            "PATTERN-ONLY anonymisation: no spaCy English pipeline was installed, so "
            "personal names and places were not replaced.",
        )
    remaining = anonymised.own_names.get("display-names-remaining", 0)
    if remaining:
        warnings += (
            f"{remaining} occurrence(s) of users' own display names are still in the stored text "
            "(inside spans kept as gear names, or cut by markup); inspect and prepare again with --force "
            "after editing the raw reviews.",
        )
    return StoreMetadata(
        anonymiser=scrubber.mode,
        pii_counts=dict(sorted(anonymised.pii_counts.items())),
        num_users=len({r.user_id for r in anonymised.reviews}),
        num_reviews=len(anonymised.reviews),
        own_names=anonymised.own_names,
        source=source,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        warnings=warnings,
        pseudonym_key=pseudonym_key,
    )


def prepare_store(
    reviews_file: str | Path,
    items_file: str | Path,
    out: str | Path,
    secret: Secret,
    *,
    model: str = "auto",
    kdf: KdfSettings | None = None,
    force: bool = False,
    on_bad: str = "fail",
    progress: bool = True,
) -> StoreMetadata:
    """Validate, anonymise, pseudonymise and encrypt one client's reviews into ``out``."""
    out = Path(out)
    if out.exists() and not force:  # fail before the slow part; write_encrypted checks again
        raise PrepareError(
            f"{out} already exists; pass --force to replace it (the old store is kept until the new one is complete)"
        )
    data = load_dataset(reviews_file, items_file, on_bad=on_bad)  # refuses a file without reviews
    from client.anonymiser import PiiScrubber

    scrubber = PiiScrubber.for_catalogue(data.items.values(), model=model)
    key = new_pseudonym_key()
    anonymised = anonymise_reviews(data.reviews, scrubber, pseudonym_key=key, progress=progress)
    source = {
        "reviews-file": Path(reviews_file).name,
        "items-file": Path(items_file).name,
        "records-read": data.review_report.lines_read if data.review_report else None,
        "records-skipped": data.review_report.records_bad if data.review_report else 0,
        "texts-per-second": round(anonymised.texts_per_second, 1),
    }
    metadata = build_metadata(anonymised, scrubber, pseudonym_key=key, source=source)
    LocalStore.write(out, metadata, anonymised.reviews, secret, kdf=kdf, force=force)
    start_ledger(out, key)
    if not policy_path(out).is_file():
        PrivacyPolicy().write(policy_path(out))
    log.info(
        "prepared %s: %d reviews of %d users, anonymiser %s, replaced %s",
        out,
        metadata.num_reviews,
        metadata.num_users,
        metadata.anonymiser,
        dict(metadata.pii_counts) or "nothing",
    )
    for warning in metadata.warnings:
        log.warning(warning)
    return metadata


def start_ledger(store: Path, pseudonym_key: str) -> None:
    """A new ledger for a new store; the ledger of a store it replaced (``--force``) is kept aside."""
    old = ledger_path(store)
    if old.exists():
        kept = old.with_name(f"{old.name}.replaced-{int(time.time())}")
        old.rename(kept)
        log.warning("the replaced store's privacy ledger is kept as %s", kept)
    PrivacyLedger.create(store, LedgerKey.of_store(pseudonym_key))
