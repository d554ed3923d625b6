"""Distributed DP on the server: secure sums of the devices' noised statistics (SecAgg+), and
what the server makes of them (the popularity prior, the head items, EASE).

Flower 1.42 has SecAgg+ only as a legacy workflow: ``SecAggPlusWorkflow`` run by
``DefaultWorkflow`` in a ``LegacyContext`` around a legacy strategy. :class:`ReleaseStrategy` is
that strategy: it asks every sampled client for the release and receives, after Flower has
unmasked it, only the aggregate, never one client's vector. SecAgg+ averages (weighted by
``num_examples``); each device sends weight 1, so the sum is the average times the number of
contributors. Fewer than the reconstruction threshold and nothing is unmasked: the release is
refused (:class:`ReleaseError`) and the accountant records nothing.

What the sum is, and how the devices' noise shares add up, is in ``client/secure_release.py``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
from flwr.app import Context
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid

from common import records
from common.baselines import ease_from_gram
from common.config import RunConfig
from common.federation_dp import SAMPLE_RATE, FederationAccountant, release_noise
from server.grid import DelegatingGrid

log = logging.getLogger(__name__)

CLIPPING_RANGE = 4096.0  # SecAgg+ clips each value to +-this before quantising (2^22 levels: 0.002 apart)


class ReleaseError(RuntimeError):
    """A secure release did not complete; nothing was released."""


@dataclass(frozen=True)
class Release:
    """A completed release: the noised sum, what it cost, and what the devices sent for it."""

    total: np.ndarray
    contributors: int
    noise_multiplier: float
    upload_bytes_per_client: float  # every SecAgg+ stage's reply, as it reached the server


class MeteredGrid(DelegatingGrid):
    """The server's Grid, counting the bytes of every reply (records' values as they travel) and the
    error replies by their fixed reason."""

    def __init__(self, grid: Grid) -> None:
        super().__init__(grid)
        self.received, self.errors = 0, Counter[str]()

    def send_and_receive(self, messages, *, timeout: float | None = None):
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        self.received += sum(records.payload_bytes(m.content) for m in replies if m.has_content())
        self.errors.update((m.error.reason or "").split(":")[0] for m in replies if m.has_error())
        return replies


class ReleaseStrategy(Strategy):
    """Legacy strategy for one release: every available client contributes; keep the sum."""

    def __init__(self, cfg: RunConfig, statistic: str, config: dict | None = None) -> None:
        super().__init__()
        self.cfg, self.statistic, self.config = cfg, statistic, config or {}
        self.total: np.ndarray | None = None
        self.contributors = 0
        self.seen: list[list[np.ndarray]] = []  # what aggregate_fit was given (tests inspect it)

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return ndarrays_to_parameters([np.zeros(1, dtype=np.float32)])  # the release needs no model

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        wanted = max(math.ceil(self.cfg.fraction_train * self.cfg.num_clients), self.cfg.min_train_clients)
        clients = client_manager.sample(num_clients=wanted, min_num_clients=self.cfg.min_train_clients)
        config = {**self.config, records.RELEASE: self.statistic, records.SERVER_ROUND: server_round}
        return [(client, FitIns(parameters, config)) for client in clients]

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list
    ) -> tuple[Parameters | None, dict]:
        if not results:
            return None, {}
        self.seen = [parameters_to_ndarrays(res.parameters) for _, res in results]
        # Every result carries the same unmasked average over the contributors.
        self.contributors = len(results)
        self.total = self.seen[0][0].astype(np.float64) * self.contributors
        return results[0][1].parameters, {}

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        return []

    def aggregate_evaluate(
        self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]], failures: list
    ) -> tuple[float | None, dict]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters) -> None:
        return None


class SecAggPlus(SecAggPlusWorkflow):
    """Flower's SecAgg+ workflow, tolerant of a node that drops before it sends its public keys.

    Flower 1.42 keeps such a node among the sampled ones, so the unmask stage counts it as dropped
    and asks the survivors for its secret-key shares, which it never sent them: every survivor
    fails (KeyError) and the round is lost. It never exchanged keys, so no mask involves it: it
    is forgotten after the setup stage, and the threshold is checked on those that remain.
    """

    def setup_stage(self, grid: Grid, context, state) -> bool:
        started = super().setup_stage(grid, context, state)
        if not state.active_node_ids:
            return started
        state.sampled_node_ids = set(state.active_node_ids)
        return self._check_threshold(state)


def secure_release(
    grid: Grid,
    context: Context,
    cfg: RunConfig,
    accountant: FederationAccountant,
    statistic: str = records.RELEASE_ITEM_COUNTS,
    config: dict | None = None,
) -> Release:
    """Run one SecAgg+ release of ``statistic`` (``config``: what the devices need for it, e.g.
    the head items); record it in ``accountant``; return the noised sum."""
    strategy = ReleaseStrategy(cfg, statistic, config)
    metered = MeteredGrid(grid)
    threshold = cfg.secagg_threshold or cfg.num_clients
    workflow = DefaultWorkflow(
        fit_workflow=SecAggPlus(
            num_shares=1.0,
            reconstruction_threshold=threshold,
            max_weight=1.0,
            clipping_range=CLIPPING_RANGE,
            timeout=cfg.round_timeout,
        )
    )
    workflow(metered, LegacyContext(context, config=ServerConfig(num_rounds=1), strategy=strategy))
    if strategy.total is None:
        refused = "".join(f"; {n} client(s) replied {reason}" for reason, n in sorted(metered.errors.items()))
        raise ReleaseError(
            f"the secure release of {statistic} did not complete: fewer than the threshold of "
            f"{threshold} clients took part{refused} (see run.log); nothing was released or spent"
        )
    sigma = release_noise(cfg, statistic)
    accountant.record(sigma, SAMPLE_RATE, 1)
    log.info(
        "released %s: secure sum over %d clients, noise multiplier %.3f, federation epsilon %.3f (delta %g)",
        statistic,
        strategy.contributors,
        sigma,
        accountant.epsilon(),
        accountant.delta,
    )
    return Release(
        total=strategy.total,
        contributors=strategy.contributors,
        noise_multiplier=sigma,
        upload_bytes_per_client=metered.received / strategy.contributors,
    )


def popularity_prior(counts: np.ndarray, strength: float) -> np.ndarray:
    """Per-item score offsets from noised counts: strength x count / largest count, negatives at 0
    (post-processing of the release; the linear scale beat log(1 + count) on validation at every
    epsilon in ``scripts/explore_release.py``)."""
    counts = np.clip(counts, 0.0, None)
    top = counts.max()
    return strength * counts / top if top > 0 else np.zeros_like(counts)


def head_items(counts: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` most counted items' rows (ties by row), from the noised counts."""
    return np.argsort(-counts, kind="stable")[:size]


def ease(upper: np.ndarray, size: int, ridge: float) -> np.ndarray:
    """EASE item-item weights from a released upper triangle of a Gram matrix."""
    gram = np.zeros((size, size))
    gram[np.triu_indices(size)] = upper
    return ease_from_gram(gram + np.triu(gram, 1).T, ridge)
