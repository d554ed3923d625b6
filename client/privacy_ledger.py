"""The client's privacy ledger: every DP-SGD step it ever took, composed by an Opacus accountant.

The ledger lies beside the local store (``<store>.ledger``), encrypted with the store's secret in
the same authenticated format, and is rewritten atomically after every round. Before training,
a client restores it and asks whether this round would take it past its budget; if so it
declines. Across rounds, process restarts and separate runs on the same store, epsilon keeps
adding up. A ledger that fails authentication (tampered, wrong key) is refused: the client
stops training rather than start again from zero.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from client.encryption import EncryptionError, Secret, read_encrypted, write_encrypted

log = logging.getLogger(__name__)

ACCOUNTANTS = {"rdp": RDPAccountant, "prv": PRVAccountant}
LEDGER_FORMAT = 1


class LedgerError(RuntimeError):
    """The ledger cannot be trusted (tampered, wrong key, other accountant or delta)."""


class BudgetExhausted(RuntimeError):
    """Training this round would spend more than the client's privacy budget."""


@dataclass
class PrivacyLedger:
    """Accountant history (noise multiplier, sample rate, steps) and a row per trained round."""

    path: Path
    accountant: str
    delta: float
    target_epsilon: float
    noise_multiplier: float = 0.0  # fixed at the first calibration, then kept
    history: list[tuple[float, float, int]] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def open(cls, path: str | Path, secret: Secret, *, accountant: str, delta: float,
             target_epsilon: float) -> "PrivacyLedger":
        """The ledger at ``path`` (a new, empty one when there is none yet)."""
        path = Path(path)
        if accountant not in ACCOUNTANTS:
            raise LedgerError(f"accountant {accountant!r} is unknown; choose one of {sorted(ACCOUNTANTS)}")
        if not path.exists():
            return cls(path, accountant, delta, target_epsilon)
        try:
            data = json.loads(read_encrypted(path, secret))
        except EncryptionError as err:
            raise LedgerError(f"privacy ledger refused: {err}. Training stops: a client must not "
                              f"forget what it spent") from None
        if data.get("format") != LEDGER_FORMAT or data.get("accountant") != accountant:
            raise LedgerError(f"{path}: ledger kept with accountant {data.get('accountant')!r}, run "
                              f"asks for {accountant!r}; keep `accountant` unchanged for this store")
        if abs(float(data["delta"]) - delta) > 1e-15:
            raise LedgerError(f"{path}: ledger kept at delta {data['delta']}, run asks for {delta}; "
                              f"keep `target-delta` unchanged for this store")
        return cls(path, accountant, delta, target_epsilon, float(data.get("noise-multiplier", 0.0)),
                   [tuple(h) for h in data["history"]], list(data.get("rounds", [])))

    def _accountant(self, extra: list[tuple[float, float, int]] = ()):
        acc = ACCOUNTANTS[self.accountant]()
        acc.history = [tuple(h) for h in [*self.history, *extra]]
        return acc

    def epsilon(self, extra: list[tuple[float, float, int]] = ()) -> float:
        """Epsilon spent so far (plus ``extra`` planned steps) at this ledger's delta."""
        if not self.history and not extra:
            return 0.0
        return float(self._accountant(extra).get_epsilon(delta=self.delta))

    def calibrate(self, *, sample_rate: float, planned_steps: int, noise_multiplier: float = 0.0) -> float:
        """The noise multiplier, computed ONCE for the whole planned federation and then kept."""
        if not self.noise_multiplier:
            self.noise_multiplier = noise_multiplier or get_noise_multiplier(
                target_epsilon=self.target_epsilon, target_delta=self.delta, sample_rate=sample_rate,
                steps=planned_steps, accountant=self.accountant)
            log.info("DP calibrated: noise multiplier %.4f for epsilon %.2f at delta %.2e over %d "
                     "planned steps (sample rate %.4f, %s accountant)", self.noise_multiplier,
                     self.target_epsilon, self.delta, planned_steps, sample_rate, self.accountant)
        return self.noise_multiplier

    def check_budget(self, *, sample_rate: float, steps: int) -> float:
        """Epsilon after this round; raises :class:`BudgetExhausted` if it passes the budget."""
        after = self.epsilon([(self.noise_multiplier, sample_rate, steps)])
        if after > self.target_epsilon * 1.0001:
            raise BudgetExhausted(f"declined: this round would bring epsilon from "
                                  f"{self.epsilon():.3f} to {after:.3f}, past the budget of "
                                  f"{self.target_epsilon:g} (delta {self.delta:.1e})")
        return after

    def record(self, history: list[tuple[float, float, int]], *, secret: Secret, server_round: int) -> float:
        """Add one round's accountant history, save the ledger, return epsilon spent in total."""
        self.history.extend(tuple(h) for h in history)
        spent = self.epsilon()
        self.rounds.append({"round": server_round, "steps": sum(h[2] for h in history),
                            "epsilon": spent, "time": int(time.time())})
        payload = {"format": LEDGER_FORMAT, "accountant": self.accountant, "delta": self.delta,
                   "target-epsilon": self.target_epsilon, "noise-multiplier": self.noise_multiplier,
                   "history": [list(h) for h in self.history], "rounds": self.rounds}
        write_encrypted(self.path, json.dumps(payload).encode(), secret, force=True)
        return spent
