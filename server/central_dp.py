"""Central DP: clients clip their model update, the server adds Gaussian noise to the average.

Flower's ``DifferentialPrivacyClientSideFixedClipping`` wraps the strategy (noise std =
noise multiplier x clipping norm / sampled clients, on the uniform average), and the clients
run ``fixedclipping_mod`` on train messages. The unit protected is one client (all its users).

Accounting is ours and kept apart from the clients' DP-SGD ledgers: every round is one
Gaussian release composed by Opacus's RDP accountant without amplification by client sampling
(Flower samples a fixed number of clients, not Poisson), which is conservative.
"""

from __future__ import annotations

import logging

from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, Strategy
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from common.config import RunConfig

log = logging.getLogger(__name__)


class CentralAccountant:
    """Epsilon of the rounds released so far (client-level, no sampling amplification)."""

    def __init__(self, *, noise_multiplier: float, delta: float) -> None:
        self.noise_multiplier, self.delta = noise_multiplier, delta
        self.accountant = RDPAccountant()

    def release(self) -> float:
        """Count one aggregated round; returns epsilon so far."""
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=1.0)
        return self.epsilon

    @property
    def epsilon(self) -> float:
        """Epsilon spent so far at ``delta``."""
        return float(self.accountant.get_epsilon(delta=self.delta)) if self.accountant.history else 0.0


def sampled_clients(cfg: RunConfig) -> int:
    """Clients FedAvg samples per round (its own formula)."""
    return max(int(cfg.num_clients * cfg.fraction_train), cfg.min_train_clients)


def wrap(strategy: Strategy, cfg: RunConfig) -> tuple[Strategy, CentralAccountant]:
    """``strategy`` wrapped for central DP, with the noise calibrated for ``num-rounds`` releases."""
    delta = cfg.target_delta or 1.0 / (10 * cfg.num_clients)
    noise = cfg.noise_multiplier or get_noise_multiplier(
        target_epsilon=cfg.target_epsilon, target_delta=delta, sample_rate=1.0,
        steps=cfg.num_rounds, accountant="rdp")
    log.info("central DP: noise multiplier %.3f, update clipping norm %.3f, %d clients per round, "
             "epsilon %.2f planned over %d rounds at delta %.1e (client-level)", noise,
             cfg.update_clipping_norm, sampled_clients(cfg), cfg.target_epsilon, cfg.num_rounds, delta)
    wrapped = DifferentialPrivacyClientSideFixedClipping(
        strategy, noise_multiplier=noise, clipping_norm=cfg.update_clipping_norm,
        num_sampled_clients=sampled_clients(cfg))
    return wrapped, CentralAccountant(noise_multiplier=noise, delta=delta)
