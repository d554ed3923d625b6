"""Distributed DP's accounting, shared by the server and every device: one mechanism, one epsilon.

A run with ``dp`` = 'distributed' makes one or two Gaussian releases over every user of the
federation (sampling rate 1: each participating device sends every user's clipped
contribution): the item counts and, with ``release-head-items`` > 0, the head items' Gram
matrix. Their noise multipliers depend only on public run settings, so the server's
:class:`FederationAccountant` and each device's ledger (``client/privacy_ledger.py``, at the
device's own delta and budget) compute the same history with Opacus's accountant.

The budget is split in RDP terms: sigma is the multiplier of one release that spends the
target; the counts get sigma / sqrt(share) and the Gram sigma / sqrt(1 - share). Gaussian RDP
adds up as 1 / sigma^2, so the two compose to exactly the single release's curve.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings

from common import records
from common.config import RunConfig

SAMPLE_RATE = 1.0  # every user of every participating client


def release_plan(cfg: RunConfig) -> dict[str, float]:
    """Statistic -> noise multiplier of each release of the run, in order. sigma is
    ``noise-multiplier`` if set, else calibrated to ``target-epsilon`` at ``target-delta``."""
    sigma = cfg.noise_multiplier or _calibrated(cfg.target_epsilon, cfg.target_delta, 1)
    if not cfg.release_head_items:
        return {records.RELEASE_ITEM_COUNTS: sigma}
    return {
        records.RELEASE_ITEM_COUNTS: sigma / math.sqrt(cfg.release_split),
        records.RELEASE_HEAD_GRAM: sigma / math.sqrt(1.0 - cfg.release_split),
    }


def release_noise(cfg: RunConfig, statistic: str = records.RELEASE_ITEM_COUNTS) -> float:
    """The noise multiplier of ``statistic``'s release in this run."""
    return release_plan(cfg)[statistic]


@contextlib.contextmanager
def quiet_accountant():
    """Opacus's accountant without its warning for single releases."""
    # Opacus warns that a single release's optimal RDP order is its largest one: the bound is
    # valid, only slightly loose (about 6% more noise than the PRV accountant at epsilon 8).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        yield


@functools.lru_cache(maxsize=32)
def _calibrated(epsilon: float, delta: float, releases: int) -> float:
    from opacus.accountants.utils import get_noise_multiplier  # imports torch: only when calibrating

    with quiet_accountant():
        return float(
            get_noise_multiplier(
                target_epsilon=epsilon, target_delta=delta, sample_rate=SAMPLE_RATE, steps=releases, accountant="rdp"
            )
        )


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
        from opacus.accountants import RDPAccountant

        accountant = RDPAccountant()
        accountant.history = list(self.history)
        with quiet_accountant():
            return float(accountant.get_epsilon(delta=self.delta))
