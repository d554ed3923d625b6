"""Central DP: clients clip their model update, the server adds Gaussian noise to the average.

The unit protected is one client (all its users), and the party trusted to add the noise is the
server itself: against a curious server it protects nothing, which is why a device whose
policy requires DP refuses central DP. It protects the published model against everyone else.

Flower's ``DifferentialPrivacyClientSideFixedClipping`` sends the clipping norm (clients run
``fixedclipping_mod``); the release is ours, so that it holds when fewer clients reply than
were sampled:

* the noise is calibrated to the replies actually averaged: standard deviation
  noise multiplier x clipping norm / replies (Flower's wrapper uses the sampled count, so the
  effective noise multiplier fell whenever a client dropped out);
* a round with fewer than ``min-train-clients`` successful replies is not released at all;
* the noise comes from OS entropy (``numpy.random.default_rng()``), never from a seed;
* every release is composed by Opacus's RDP accountant (no credit for client sampling, which
  is conservative) in a ledger kept in ``<run-dir>/central-dp-ledger.json``, so epsilon adds
  up over every run of that folder; a release past ``target-epsilon`` is refused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, Strategy
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from common.config import RunConfig
from common.files import atomic_write

log = logging.getLogger(__name__)

LEDGER_NAME = "central-dp-ledger.json"


class CentralAccountant:
    """Epsilon of every central release made from one run folder (client-level, no amplification)."""

    def __init__(self, path: Path, *, delta: float, budget: float) -> None:
        self.path, self.delta, self.budget = path, delta, budget
        self.history: list[list[float]] = []
        if path.is_file():
            try:
                self.history = [list(h) for h in json.loads(path.read_text())["history"]]
            except (OSError, ValueError, KeyError, TypeError):
                raise RuntimeError(
                    f"{path}: the central DP ledger is unreadable; restore it (deleting it "
                    "would forget what earlier runs released)"
                ) from None

    def epsilon(self, extra: Iterable[list[float]] = ()) -> float:
        """Epsilon of the releases so far (plus ``extra``) at ``delta``."""
        history = [*self.history, *extra]
        if not history:
            return 0.0
        accountant = RDPAccountant()
        accountant.history = [(float(s), float(q), int(n)) for s, q, n in history]
        return float(accountant.get_epsilon(delta=self.delta))

    def allows(self, noise_multiplier: float) -> bool:
        """Whether one more release stays within the budget."""
        return self.epsilon([[noise_multiplier, 1.0, 1]]) <= self.budget * 1.0001

    def release(self, noise_multiplier: float) -> float:
        """Record one release; returns epsilon so far."""
        self.history.append([noise_multiplier, 1.0, 1])
        atomic_write(self.path, json.dumps({"delta": self.delta, "history": self.history}))
        return self.epsilon()


class ReplyCalibratedClipping(DifferentialPrivacyClientSideFixedClipping):
    """Flower's client-side fixed clipping, with the noise scaled to the replies actually averaged."""

    def __init__(
        self,
        strategy: Strategy,
        *,
        noise_multiplier: float,
        clipping_norm: float,
        num_sampled_clients: int,
        min_replies: int,
        accountant: CentralAccountant,
    ) -> None:
        super().__init__(
            strategy,
            noise_multiplier=noise_multiplier,
            clipping_norm=clipping_norm,
            num_sampled_clients=num_sampled_clients,
        )
        if min_replies < 1:
            raise ValueError(f"min_replies should be at least 1, got {min_replies}.")
        self.min_replies, self.central = min_replies, accountant

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Uniform average of the successful replies plus noise for their number; or no release."""
        replies = list(replies)
        answered = [m for m in replies if m.has_content()]
        refusal = ""
        if len(answered) < self.min_replies:
            refusal = f"{len(answered)} of {len(replies)} clients replied, fewer than {self.min_replies}"
        elif not self.central.allows(self.noise_multiplier):
            refusal = f"the next release would pass epsilon {self.central.budget:g}"
        if refusal:
            log.warning("round %d: %s; nothing released", server_round, refusal)
            self.strategy.aggregate_train(server_round, [m for m in replies if m.has_error()])  # bookkeeping
            return None, None
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if arrays is None:  # too few valid replies: nothing released
            return None, None
        averaged = getattr(self.strategy, "last_aggregated", len(answered))  # replies that passed the checks
        std = self.noise_multiplier * self.clipping_norm / averaged
        rng = np.random.default_rng()  # OS entropy
        noised = {
            k: Array(np.asarray(v + rng.normal(0.0, std, size=v.shape), dtype=v.dtype))
            for k, v in zip(arrays.keys(), arrays.to_numpy_ndarrays(), strict=True)
        }
        spent = self.central.release(self.noise_multiplier)
        for row in getattr(self.strategy, "history", []):  # RecommenderFedAvg's round record
            if row.get("round") == server_round:
                row["central-epsilon"] = spent
        log.info(
            "round %d: central DP noise std %.5f on the average of %d clients; epsilon %.3f",
            server_round,
            std,
            averaged,
            spent,
        )
        return ArrayRecord(noised), metrics


def wrap(strategy: Strategy, cfg: RunConfig) -> tuple[Strategy, CentralAccountant]:
    """``strategy`` wrapped for central DP, with the noise calibrated for ``num-rounds`` releases."""
    noise = cfg.noise_multiplier or get_noise_multiplier(
        target_epsilon=cfg.target_epsilon,
        target_delta=cfg.target_delta,
        sample_rate=1.0,
        steps=cfg.num_rounds,
        accountant="rdp",
    )
    accountant = CentralAccountant(Path(cfg.run_dir) / LEDGER_NAME, delta=cfg.target_delta, budget=cfg.target_epsilon)
    log.info(
        "central DP: noise multiplier %.3f, update clipping norm %.3f, at least %d clients per round, "
        "epsilon %.2f over every run in %s at delta %.1e (client-level; %.3f spent before this run)",
        noise,
        cfg.update_clipping_norm,
        cfg.min_train_clients,
        cfg.target_epsilon,
        cfg.run_dir,
        cfg.target_delta,
        accountant.epsilon(),
    )
    wrapped = ReplyCalibratedClipping(
        strategy,
        noise_multiplier=noise,
        clipping_norm=cfg.update_clipping_norm,
        num_sampled_clients=sampled_clients(cfg),
        min_replies=cfg.min_train_clients,
        accountant=accountant,
    )
    return wrapped, accountant


def sampled_clients(cfg: RunConfig) -> int:
    """Clients FedAvg samples per round (its own formula)."""
    return max(int(cfg.num_clients * cfg.fraction_train), cfg.min_train_clients)
