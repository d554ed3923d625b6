"""The client's privacy ledger: every DP release this store's data ever took part in.

Guarantee: the ledger is the device's own memory of what it spent, and it holds against the
server and against the usual accidents on the device:

* **Bound to its store.** It is encrypted (the chunked AES-256-GCM format of
  :mod:`client.encryption`) under a key derived from the store's pseudonym key, which lives
  only inside the encrypted store, and it names the store's id. A ledger of another store does
  not open; a passphrase change of the store leaves it valid, since the store's content (and
  so the key) is unchanged.
* **Never silently zero.** It is created together with its store (``client prepare``), so a
  missing ledger is an error, never a fresh budget.
* **No rollback.** Every save increments a version, also recorded in an anchor file outside
  the store's folder (``$PRIVREC_STATE_DIR``, default ``~/.local/state/privrec``); a ledger
  older than its anchor is refused. (A device whose state folder is restored together with the
  store from the same old backup is beyond what a file can detect.)
* **One writer.** A file lock (``<store>.ledger.lock``) is held while a round or evaluation
  reads, checks and records, so concurrent runs on one store add up instead of overwriting.

It also keeps the device's transparency log (``sent``): one entry per reply that left the device,
written by the egress guard before the reply goes (see :mod:`client.transparency`); a reset of the
budget keeps it.

What it composes is the accountant's history, entries of (noise multiplier, sample rate, steps),
with the Opacus accountant the device policy names; epsilon is stated at the policy's delta. The
epsilons it computed are kept with it (keyed by accountant, delta and history), so a message that
only reads what was spent does not import Opacus (and torch) again in a fresh ClientApp process.
Before a release, :meth:`PrivacyLedger.check` raises :class:`BudgetExhausted` if it would pass
the policy's budget or its per-round cap. Every failure to trust the ledger raises
:class:`LedgerError` with one line naming the file and the fix.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from client.encryption import EncryptionError, Secret, read_encrypted, write_encrypted
from client.policy import PrivacyPolicy
from common.federation_dp import quiet_accountant
from common.files import atomic_write

log = logging.getLogger(__name__)

LEDGER_FORMAT = 2
MEMO_SIZE = 16  # epsilons kept with the ledger
STATE_DIR_ENV = "PRIVREC_STATE_DIR"
LOCK_TIMEOUT_SECONDS = 600.0
Entry = tuple[float, float, int]  # (noise multiplier, sample rate, steps): one accountant history row


class LedgerError(RuntimeError):
    """The ledger cannot be trusted or used (missing, tampered, rolled back, other store, busy)."""


class BudgetExhausted(RuntimeError):
    """This release would spend more than the device's privacy policy allows."""


def ledger_path(store: Path) -> Path:
    """The privacy ledger kept beside a store."""
    return store.with_name(store.name + ".ledger")


def state_dir() -> Path:
    """Where ledger anchors live: ``$PRIVREC_STATE_DIR`` or ``~/.local/state/privrec``."""
    return Path(os.environ.get(STATE_DIR_ENV) or Path.home() / ".local" / "state" / "privrec")


@dataclass(frozen=True)
class LedgerKey:
    """What binds a ledger to its store: an id and a key, both derived from the store's
    pseudonym key (which only the decrypted store holds)."""

    store_id: str
    secret: Secret

    @classmethod
    def of_store(cls, pseudonym_key: str) -> LedgerKey:
        """The ledger key of the store whose metadata holds ``pseudonym_key`` (hex)."""
        master = bytes.fromhex(pseudonym_key)

        def expand(info: bytes, length: int) -> bytes:
            return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(master)

        return cls(expand(b"privrec/v1/store-id", 12).hex(), Secret.from_key_bytes(expand(b"privrec/v1/ledger", 32)))


@dataclass
class PrivacyLedger:
    """Accountant history, one event per release (round, evaluation, reset) and one entry per
    reply sent (the transparency log), versioned."""

    path: Path
    key: LedgerKey
    version: int = 0
    history: list[Entry] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    has_log: bool = True  # False for a ledger written before the transparency log existed
    memo: dict[str, float] = field(default_factory=dict)  # accountant, delta, history -> epsilon

    # ----- life cycle ---------------------------------------------------------------------------
    @classmethod
    def create(cls, store: Path, key: LedgerKey) -> PrivacyLedger:
        """A new, empty ledger beside a new store (refuses to replace an existing one)."""
        ledger = cls(ledger_path(Path(store)), key)
        if ledger.path.exists():
            raise LedgerError(
                f"{ledger.path} already exists; a new store gets a new ledger, and an existing ledger is never replaced"
            )
        ledger._save(force=False)
        return ledger

    @classmethod
    def open(cls, store: Path, key: LedgerKey) -> PrivacyLedger:
        """The ledger of ``store``, checked against its store id and its version anchor."""
        path = ledger_path(Path(store))
        if not path.exists():
            raise LedgerError(
                f"{path}: the privacy ledger of this store is missing. It was created "
                "with the store and must not be deleted: restore it from a backup, or "
                "prepare a new store (which starts a new ledger)"
            )
        try:
            data = json.loads(read_encrypted(path, key.secret))
        except EncryptionError:
            raise LedgerError(
                f"{path}: the privacy ledger does not open with this store's key (it "
                "belongs to another store or was tampered with); restore this store's "
                "own ledger"
            ) from None
        except ValueError:
            raise LedgerError(f"{path}: the privacy ledger is malformed; restore it from a backup") from None
        if data.get("format") != LEDGER_FORMAT or data.get("store-id") != key.store_id:
            raise LedgerError(
                f"{path}: this ledger was not written for this store (format "
                f"{data.get('format')!r}); restore this store's own ledger"
            )
        ledger = cls(
            path,
            key,
            int(data["version"]),
            [tuple(h) for h in data["history"]],
            list(data["events"]),
            list(data.get("sent", [])),
            "sent" in data,
            {str(k): float(v) for k, v in data.get("epsilon-memo", {}).items()},
        )
        anchored = ledger._anchored_version()
        if anchored > ledger.version:
            raise LedgerError(
                f"{path}: the privacy ledger was rolled back (version {ledger.version}, "
                f"but version {anchored} was already seen on this device); restore the "
                "latest ledger. A client must not forget what it spent"
            )
        return ledger

    def reset(self, *, reason: str, level: int = logging.WARNING) -> None:
        """Forget the history (a new budget). Only the device owner's explicit tools call this;
        the reset itself stays on record, and so does the transparency log."""
        resets = sum(1 for e in self.events if e["kind"] == "reset")
        log.log(level, "privacy ledger %s reset (%s): its history is forgotten", self.path, reason)
        self.history = []
        self.events = [{"kind": "reset", "reason": reason, "resets-before": resets, "time": int(time.time())}]
        self._save()

    # ----- accounting -----------------------------------------------------------------------------
    def epsilon(self, policy: PrivacyPolicy, extra: Sequence[Entry] = ()) -> float:
        """Epsilon spent so far (plus ``extra``) at the policy's delta."""
        return self._epsilon([*self.history, *extra], policy)

    def check(self, policy: PrivacyPolicy, planned: list[Entry]) -> float:
        """Epsilon after the ``planned`` release; raises :class:`BudgetExhausted` past the policy."""
        alone, after = self._epsilon(planned, policy), self.epsilon(policy, planned)
        if alone > policy.max_epsilon_per_round * 1.0001:
            raise BudgetExhausted(
                f"declined: this release alone would spend epsilon {alone:.3f}, above "
                f"the device's cap of {policy.max_epsilon_per_round:g} per round"
            )
        if after > policy.epsilon_budget * 1.0001:
            raise BudgetExhausted(
                f"declined: this release would bring epsilon from {self.epsilon(policy):.3f} "
                f"to {after:.3f}, past the device's budget of {policy.epsilon_budget:g} "
                f"(delta {policy.delta:g})"
            )
        return after

    def evaluations(self, run_id: int, server_round: int) -> int:
        """Evaluation queries already answered in this run and round."""
        return sum(
            1
            for e in self.events
            if e["kind"] == "evaluate" and e.get("run") == run_id and e.get("round") == server_round
        )

    @property
    def rounds_without_dp(self) -> int:
        """Rounds this store trained without DP (its policy allowed them; no epsilon covers them)."""
        return sum(1 for e in self.events if e["kind"] == "train-without-dp")

    def record(
        self, kind: str, entries: list[Entry], policy: PrivacyPolicy, *, run_id: int, server_round: int, **details: str
    ) -> float:
        """Add one release (``kind``: 'train', 'evaluate', 'release' or 'train-without-dp'), save,
        return epsilon. ``details`` (e.g. which statistic) are kept with the event."""
        self.history.extend((float(e[0]), float(e[1]), int(e[2])) for e in entries)
        spent = self.epsilon(policy)
        self.events.append(
            {
                "kind": kind,
                "run": run_id,
                "round": server_round,
                **details,
                "entries": [list(e) for e in entries],
                "epsilon": spent,
                "time": int(time.time()),
            }
        )
        self._save()
        return spent

    def record_sent(self, entry: dict[str, Any]) -> None:
        """Append one reply to the transparency log (numbered, timed) and save, before it leaves."""
        self.sent.append({"seq": len(self.sent) + 1, "time": int(time.time()), **entry})
        self._save()

    def _epsilon(self, history: list[Entry], policy: PrivacyPolicy) -> float:
        rows = _merged(history)
        if not rows:
            return 0.0
        key = json.dumps([policy.accountant, policy.delta, rows])
        if key not in self.memo:
            self.memo[key] = _epsilon(rows, policy)
            while len(self.memo) > MEMO_SIZE:
                del self.memo[next(iter(self.memo))]
        return self.memo[key]

    # ----- persistence ----------------------------------------------------------------------------
    def _save(self, *, force: bool = True) -> None:
        self.version += 1
        payload = {
            "format": LEDGER_FORMAT,
            "store-id": self.key.store_id,
            "version": self.version,
            "history": [list(h) for h in self.history],
            "events": self.events,
            "sent": self.sent,
            "epsilon-memo": self.memo,
        }
        try:
            write_encrypted(self.path, json.dumps(payload).encode(), self.key.secret, force=force)
        except EncryptionError as err:
            raise LedgerError(f"privacy ledger not saved: {err}") from None
        self._write_anchor()

    def _anchor(self) -> Path:
        return state_dir() / "ledgers" / f"{self.key.store_id}.json"

    def _anchored_version(self) -> int:
        try:
            return int(json.loads(self._anchor().read_text())["version"])
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError):
            raise LedgerError(
                f"{self._anchor()}: the ledger's version anchor is unreadable; restore it, "
                f"or point {STATE_DIR_ENV} at the folder that holds it"
            ) from None

    def _write_anchor(self) -> None:
        anchor = self._anchor()
        try:
            atomic_write(anchor, json.dumps({"version": self.version, "ledger": str(self.path.resolve())}))
        except OSError as err:
            raise LedgerError(
                f"cannot write the ledger's version anchor {anchor}: {err.strerror or err}; "
                f"make {state_dir()} writable or set {STATE_DIR_ENV}"
            ) from None


@contextlib.contextmanager
def open_locked(store: Path, key: LedgerKey, *, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[PrivacyLedger]:
    """The store's ledger, with its file lock held until the ``with`` block ends."""
    lock = ledger_path(Path(store)).with_suffix(".ledger.lock")
    try:
        handle = open(lock, "a+b")  # noqa: SIM115 - closed in finally
    except OSError as err:
        raise LedgerError(
            f"cannot lock the privacy ledger ({lock}: {err.strerror or err}); check permissions of the store's folder"
        ) from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LedgerError(
                        f"{lock}: another run has held this store's privacy ledger for "
                        f"{timeout:.0f} s; wait for it to finish"
                    ) from None
                time.sleep(0.05)
        yield PrivacyLedger.open(store, key)
    finally:
        handle.close()  # releases the lock


def _merged(history: list[Entry]) -> list[list]:
    """The history with the rows of one mechanism merged (composition adds their steps up exactly)."""
    steps: dict[tuple[float, float], int] = {}
    for sigma, rate, count in history:
        steps[(float(sigma), float(rate))] = steps.get((float(sigma), float(rate)), 0) + int(count)
    return [[sigma, rate, count] for (sigma, rate), count in steps.items()]


def new_accountant(name: str):
    """A fresh Opacus accountant, 'rdp' or 'prv' (imported only here: Opacus imports torch)."""
    from opacus.accountants import PRVAccountant, RDPAccountant

    return {"rdp": RDPAccountant, "prv": PRVAccountant}[name]()


def _epsilon(rows: list[list], policy: PrivacyPolicy) -> float:
    accountant = new_accountant(policy.accountant)
    accountant.history = [tuple(row) for row in rows]
    with quiet_accountant():
        return float(accountant.get_epsilon(delta=policy.delta))
