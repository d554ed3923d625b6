"""Distributed DP's accounting, shared by the server and every device: one mechanism, one epsilon.

A run with ``dp`` = 'distributed' makes ``RELEASES`` Gaussian release(s) over every user of the
federation (sampling rate 1: each participating device sends every user's clipped
contribution). Its noise multiplier depends only on public run settings, so the server's
:class:`FederationAccountant` and each device's ledger (``client/privacy_ledger.py``, at the
device's own delta and budget) compute the same history with Opacus's accountant.
"""

from __future__ import annotations

import functools

from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from common.config import RunConfig

RELEASES = 1  # item counts, once per run
SAMPLE_RATE = 1.0  # every user of every participating client


def release_noise(cfg: RunConfig) -> float:
    """sigma of each release: ``noise-multiplier`` if set, else calibrated to ``target-epsilon`` at
    ``target-delta`` over the run's releases (Opacus RDP)."""
    return cfg.noise_multiplier or _calibrated(cfg.target_epsilon, cfg.target_delta, RELEASES)


@functools.lru_cache(maxsize=32)
def _calibrated(epsilon: float, delta: float, releases: int) -> float:
    return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=SAMPLE_RATE,
                                      steps=releases, accountant="rdp"))


class FederationAccountant:
    """The server's account of what the federation released: Opacus RDP over the releases made."""

    def __init__(self, delta: float) -> None:
        self.delta = delta
        self.history: list[tuple[float, float, int]] = []

    def record(self, noise_multiplier: float, sample_rate: float = SAMPLE_RATE, steps: int = 1) -> None:
        """Add one completed release."""
        self.history.append((noise_multiplier, sample_rate, steps))

    def epsilon(self) -> float:
        """Epsilon of every release so far at :attr:`delta` (0 before any)."""
        if not self.history:
            return 0.0
        accountant = RDPAccountant()
        accountant.history = list(self.history)
        return float(accountant.get_epsilon(delta=self.delta))
