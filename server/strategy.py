"""The training rounds' strategy: Flower's FedAvg (or its robust FedMedian / FedTrimmedAvg) over the
adapter tensors, with every reply checked first (:mod:`server.reply_check`), a round aggregated
only with ``min-train-clients`` valid replies, early stopping and per-round bookkeeping.

The robust aggregators serve ``dp`` = 'none' and 'local' only: a local-DP reply is already
private, so any function of the replies is too; central DP's noise is calibrated to a mean of
clipped updates, and distributed DP sums inside secure aggregation (the config refuses both)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedMedian, FedTrimmedAvg
from flwr.serverapp.strategy.strategy_utils import sample_nodes

from common import records
from common.config import RunConfig
from server.reply_check import ReplyCheck

log = logging.getLogger(__name__)

# Replies in which a client declined by its own policy (not a failure).
DECLINED = frozenset({records.BUDGET_EXHAUSTED, records.POLICY_REFUSED, records.TOO_FEW_USERS})


class RecommenderFedAvg(FedAvg):
    """Flower's FedAvg (``aggregator`` = 'mean') that stops sending work once ``should_stop()`` is true,
    checks every reply against the tensors sent, and records each round. The robust variants below
    put Flower's FedMedian or FedTrimmedAvg after it in the method order: their aggregation, its rounds.

    ``history`` holds one dict per round: clients aggregated, declined, failed and dropped (invalid
    replies), mean upload bytes per client, wall time, and the clients' aggregated training metrics.
    """

    def __init__(
        self,
        *,
        should_stop: Callable[[], bool],
        uniform: bool = False,
        max_update_norm: float = 0.0,
        seed: int = 0,
        **kwargs,
    ) -> None:
        # DP needs every client to weigh the same: central DP scales its noise to 1/clients, and
        # a local-DP client sends no user count (it would be an un-noised release).
        super().__init__(
            arrayrecord_key=records.ARRAYS,
            configrecord_key=records.CONFIG,
            weighted_by_key=records.UNIFORM_WEIGHT if uniform else records.NUM_EXAMPLES,
            fraction_evaluate=0.0,
            **kwargs,
        )
        self.should_stop, self.max_update_norm, self.seed = should_stop, max_update_norm, seed
        self.history: list[dict[str, float]] = []
        self.last_aggregated = 0  # replies in the last aggregate (central DP scales its noise to it)
        self._round_started = 0.0
        self._check: ReplyCheck | None = None

    def expect(self, arrays: ArrayRecord) -> None:
        """The global tensors the round's replies answer (set when the round is configured)."""
        self._check = ReplyCheck(arrays, weight_key=self.weighted_by_key, max_update_norm=self.max_update_norm)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample ``fraction_train`` of the clients (at least ``min_train_nodes``), unless early stopping
        has ended the run. Unlike Flower's FedAvg the sample is drawn from ``seed`` and the round, so
        that a run is reproducible and a resumed round asks the same clients (:mod:`server.resume`)."""
        if self.should_stop():
            log.info("round %d skipped: early stopping ended training", server_round)
            return []
        self._round_started = time.perf_counter()
        self.expect(arrays)
        size = max(int(len(list(grid.get_node_ids())) * self.fraction_train), self.min_train_nodes)
        _, connected = sample_nodes(grid, self.min_available_nodes, size)  # waits for enough clients
        nodes = random.Random(f"{self.seed}-sample-{server_round}").sample(sorted(connected), size)
        log.info("round %d: sampled %d of %d clients", server_round, len(nodes), len(connected))
        config[records.SERVER_ROUND] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, nodes, MessageType.TRAIN)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the valid replies (at least ``min_train_nodes`` of them); record the round.
        Replies are taken in node order, not arrival order, so that a round's float sums repeat."""
        replies = sorted(replies, key=lambda m: m.metadata.src_node_id)
        declined = [m for m in replies if m.has_error() and m.error.code in DECLINED]
        failed = sum(1 for m in replies if m.has_error()) - len(declined)
        for m in declined:
            log.info("round %d: a client declined: %s", server_round, m.error.reason)
        valid = []
        for m in (m for m in replies if not m.has_error()):
            reason = self._check.reason(m) if self._check is not None else None
            if reason is None:
                valid.append(m)
            else:
                log.warning("round %d: dropped the reply of node %d: %s", server_round, m.metadata.src_node_id, reason)
        row: dict[str, float] = {
            "round": server_round,
            "clients": len(valid),
            "declined": len(declined),
            "failed": failed,
            "dropped": len(replies) - len(valid) - len(declined) - failed,
        }
        uploads = [records.array_bytes(m.content[records.ARRAYS]) for m in valid]  # as sent (fp16 or fp32)
        for m in valid:  # aggregate in float32 whatever dtype travelled
            m.content[records.ARRAYS] = _float32(m.content.array_records[records.ARRAYS])
        self.last_aggregated = len(valid)
        if len(valid) < self.min_train_nodes:
            log.warning(
                "round %d not aggregated: %d valid repl%s, fewer than min-train-clients (%d); the global model stays",
                server_round,
                len(valid),
                "y" if len(valid) == 1 else "ies",
                self.min_train_nodes,
            )
            self.history.append({**row, "clients": 0, "round-seconds": time.perf_counter() - self._round_started})
            self.last_aggregated = 0
            return None, None
        arrays, metrics = super().aggregate_train(server_round, valid)
        replied = [m.content.metric_records[records.METRICS] for m in valid]
        epsilons = [float(cast(float, r[records.EPSILON])) for r in replied if records.EPSILON in r]
        row.update(
            {
                "upload-bytes-per-client": sum(uploads) / max(len(uploads), 1),
                "round-seconds": time.perf_counter() - self._round_started,
            }
        )
        seen = [int(cast(int, r[records.EXAMPLES_SEEN])) for r in replied if records.EXAMPLES_SEEN in r]
        if seen:  # without DP only: a DP reply carries no count
            row["examples-seen"] = sum(seen)
        # Clients' metrics, averaged by FedAvg (examples seen is summed above instead).
        row.update(
            {
                f"train-{k}" if not k.startswith("train") else k: float(cast(float, v))
                for k, v in (metrics or {}).items()
                if k not in (records.EXAMPLES_SEEN, records.EPSILON, records.UNIFORM_WEIGHT)
            }
        )
        if epsilons:  # DP: the most any client has spent so far (each client keeps its own ledger)
            row["epsilon-max"] = max(epsilons)
        self.history.append(row)
        return arrays, metrics


class RecommenderFedMedian(RecommenderFedAvg, FedMedian):
    """The rounds with Flower's coordinate-wise median (``aggregator`` = 'median')."""


class RecommenderFedTrimmedAvg(RecommenderFedAvg, FedTrimmedAvg):
    """The rounds with Flower's coordinate-wise trimmed mean (``aggregator`` = 'trimmed-mean')."""


def build_strategy(cfg: RunConfig, should_stop: Callable[[], bool]) -> RecommenderFedAvg:
    """The strategy ``cfg`` asks for: its aggregator, minimum clients and reply bound."""
    bound = cfg.update_clipping_norm if cfg.dp == "central" else cfg.max_update_norm
    common: dict[str, Any] = dict(
        uniform=cfg.dp != "none",
        max_update_norm=bound,
        fraction_train=cfg.fraction_train,
        min_train_nodes=cfg.min_train_clients,
        min_available_nodes=cfg.min_train_clients,
        seed=cfg.seed,
    )
    if cfg.aggregator == "median":
        return RecommenderFedMedian(should_stop=should_stop, **common)
    if cfg.aggregator == "trimmed-mean":
        return RecommenderFedTrimmedAvg(should_stop=should_stop, beta=cfg.trim_fraction, **common)
    return RecommenderFedAvg(should_stop=should_stop, **common)


def _float32(record: ArrayRecord) -> ArrayRecord:
    if all(str(a.dtype) == "float32" for a in record.values()):
        return record
    return ArrayRecord({k: torch.from_numpy(a.numpy()).float() for k, a in record.items()})
