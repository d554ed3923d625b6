"""Simulation only: the simulator plays each device owner and prepares their local store.

On a real device its owner runs ``privrec client prepare`` on their own file, with their own
passphrase. In a simulated federation one review file is cut into client partitions, and each
partition is prepared exactly as a device would (anonymised, pseudonymised, encrypted) into
``<stores-dir>/<fingerprint>/client-<k>.prv``, unlocked by a random key file beside it, with its
privacy ledger and the simulated owner's privacy policy beside it too. Stores are reused while
the data, partition and anonymiser settings are unchanged (the folder name is their
fingerprint); so are their ledgers, unless the simulator resets them (a new device, as far as
the budget goes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Collection, Iterator
from pathlib import Path

from client.anonymiser import PiiScrubber
from client.encryption import Secret, make_key_file, read_header
from client.policy import SIMULATED_DEVICE, PrivacyPolicy, policy_path
from client.prepare import anonymise_reviews, build_metadata, start_ledger
from client.privacy_ledger import LedgerKey, PrivacyLedger, open_locked
from client.store import STORE_FORMAT, LocalStore, new_pseudonym_key
from common.config import RunConfig
from common.run_data import RunData

log = logging.getLogger(__name__)


def stores_dir(cfg: RunConfig) -> Path:
    """Folder of the simulated clients' stores for ``cfg``."""
    root = Path(cfg.stores_dir) if cfg.stores_dir else Path(cfg.run_dir) / "stores"
    return root / _fingerprint(cfg)


def device_files(cfg: RunConfig, partition_id: int) -> tuple[Path, Path]:
    """(store, key file) of simulated client ``partition_id``."""
    folder = stores_dir(cfg)
    return folder / f"client-{partition_id}.prv", folder / f"client-{partition_id}.key"


def prepare_simulated_devices(
    cfg: RunConfig, partitions: list[int] | None = None, *, progress: bool = True, scrubber: PiiScrubber | None = None
) -> Path:
    """Prepare the stores of ``partitions`` (default: every client) that do not exist yet, each
    with a new ledger and (where none is there yet) the default simulated-device policy.
    ``scrubber``: research only, another anonymiser than the one ``cfg`` names (give such stores
    a ``stores-dir`` of their own: the folder's fingerprint does not know it)."""
    todo = [
        p
        for p in (range(cfg.num_clients) if partitions is None else partitions)
        if not device_files(cfg, p)[0].is_file()
    ]
    folder = stores_dir(cfg)
    if not todo:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    data = RunData.load(cfg)
    if scrubber is None:
        scrubber = PiiScrubber.for_catalogue(data.data.items.values(), model=cfg.pii_model)
    log.info("simulation: preparing %d client store(s) in %s (anonymiser %s)", len(todo), folder, scrubber.mode)
    for partition in todo:
        users = set(data.client_users(cfg, partition))
        reviews = [r for r in data.data.reviews if r.user_id in users]
        key = new_pseudonym_key()
        anonymised = anonymise_reviews(reviews, scrubber, pseudonym_key=key, progress=progress)
        metadata = build_metadata(
            anonymised,
            scrubber,
            pseudonym_key=key,
            source={
                "simulated-partition": partition,
                "reviews-file": cfg.reviews_file.name,
                "texts-per-second": round(anonymised.texts_per_second, 1),
            },
        )
        store, key_file = device_files(cfg, partition)
        if not key_file.is_file():
            make_key_file(key_file)
        LocalStore.write(store, metadata, anonymised.reviews, Secret.from_key_file(key_file))
        start_ledger(store, key)
        if not policy_path(store).is_file():
            SIMULATED_DEVICE.write(policy_path(store))
        log.info(
            "client %d: %d reviews of %d users, replaced %s",
            partition,
            metadata.num_reviews,
            metadata.num_users,
            metadata.pii_counts or "nothing",
        )
    return folder


def apply_device_policy(cfg: RunConfig, policy: PrivacyPolicy) -> None:
    """The simulator, as every device's owner, sets each simulated device's privacy policy."""
    stores_dir(cfg).mkdir(parents=True, exist_ok=True)
    for partition in range(cfg.num_clients):
        policy.write(policy_path(device_files(cfg, partition)[0]), force=True)
    log.info("simulated devices' privacy policy: %s", policy.describe())


def reset_ledgers(cfg: RunConfig, *, reason: str) -> None:
    """Give every simulated device a fresh budget (benchmarks and tests comparing settings); a
    device not prepared yet gets a fresh ledger when it is."""
    reset = 0
    for partition in range(cfg.num_clients):
        if not device_files(cfg, partition)[0].is_file():
            continue
        with device_ledger(cfg, partition) as ledger:
            ledger.reset(reason=reason, level=logging.INFO)
        reset += 1
    if reset:
        log.warning(
            "the privacy ledgers of %d simulated devices were reset (%s): their history is forgotten", reset, reason
        )


@contextlib.contextmanager
def device_ledger(cfg: RunConfig, partition: int) -> Iterator[PrivacyLedger]:
    """A simulated device's privacy ledger, locked (benchmarks and tests read what it spent)."""
    store, key_file = device_files(cfg, partition)
    metadata = LocalStore.open(store, Secret.from_key_file(key_file)).metadata
    with open_locked(store, LedgerKey.of_store(metadata.pseudonym_key)) as ledger:
        yield ledger


def simulated_device_reports(cfg: RunConfig, run_id: int | Collection[int | None] | None) -> list[dict]:
    """Every simulated device's audit report for run ``run_id`` (or several: a resumed run), what
    its owner would export."""
    from client.transparency import device_report  # imports the ClientApp's modules, which import this one

    reports = []
    for partition in range(cfg.num_clients):
        store, key_file = device_files(cfg, partition)
        if not store.is_file():
            continue
        metadata = LocalStore.open(store, Secret.from_key_file(key_file)).metadata
        with device_ledger(cfg, partition) as ledger:
            reports.append(
                device_report(
                    store, metadata, read_header(store), PrivacyPolicy.load(policy_path(store)), ledger, run=run_id
                )
            )
    return reports


def _fingerprint(cfg: RunConfig) -> str:
    def file_id(path: Path) -> list:
        stat = path.stat() if path.is_file() else None
        return [str(path.resolve()), stat.st_size if stat else 0, stat.st_mtime_ns if stat else 0]

    parts = {
        "reviews": file_id(cfg.reviews_file),
        "items": file_id(cfg.items_file),
        "clients": cfg.num_clients,
        "partition": cfg.partition,
        "alpha": cfg.dirichlet_alpha,
        "seed": cfg.seed,
        "pii-model": cfg.pii_model,
        "on-bad": cfg.on_bad_record,
        "format": STORE_FORMAT,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]
