"""FedAvg over adapter tensors, with early stopping and per-round bookkeeping."""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from common import records

log = logging.getLogger(__name__)

# Replies in which a client declined by its own policy (not a failure).
DECLINED = frozenset({records.BUDGET_EXHAUSTED, records.POLICY_REFUSED, records.TOO_FEW_USERS})


class RecommenderFedAvg(FedAvg):
    """FedAvg that stops sending work once ``should_stop()`` is true and records each round.

    ``history`` holds one dict per trained round: clients that replied, mean upload bytes per
    client, wall time, and the clients' aggregated training metrics.
    """

    def __init__(self, *, should_stop: Callable[[], bool], uniform: bool = False, **kwargs) -> None:
        # DP needs every client to weigh the same: central DP scales its noise to 1/clients, and
        # a local-DP client sends no user count (it would be an un-noised release).
        super().__init__(arrayrecord_key=records.ARRAYS, configrecord_key=records.CONFIG,
                         weighted_by_key=records.UNIFORM_WEIGHT if uniform else records.NUM_EXAMPLES,
                         fraction_evaluate=0.0, **kwargs)
        self.should_stop = should_stop
        self.history: list[dict[str, float]] = []
        self._round_started = 0.0

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Sample clients as FedAvg does, unless early stopping has ended the run."""
        if self.should_stop():
            log.info("round %d skipped: early stopping ended training", server_round)
            return []
        self._round_started = time.perf_counter()
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Weighted average of the adapter tensors; records upload size and round time."""
        replies = list(replies)
        declined = [m for m in replies if m.has_error() and m.error.code in DECLINED]
        failed = sum(1 for m in replies if m.has_error()) - len(declined)
        for m in declined:
            log.info("round %d: a client declined: %s", server_round, m.error.reason)
        uploads = [records.array_bytes(m.content[records.ARRAYS]) for m in replies
                   if m.has_content() and records.ARRAYS in m.content]  # as sent (fp16 or fp32)
        for m in replies:  # average in float32 whatever dtype travelled
            if m.has_content() and records.ARRAYS in m.content:
                m.content[records.ARRAYS] = _float32(m.content[records.ARRAYS])
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None:
            self.history.append({"round": server_round, "clients": 0, "declined": len(declined),
                                 "failed": failed, "round-seconds": time.perf_counter() - self._round_started})
            return arrays, metrics
        contents = [m.content for m in replies if m.has_content() and records.ARRAYS in m.content]
        epsilons = [float(c[records.METRICS][records.EPSILON]) for c in contents
                    if records.EPSILON in c[records.METRICS]]
        row = {"round": server_round, "clients": len(uploads), "declined": len(declined), "failed": failed,
               "upload-bytes-per-client": sum(uploads) / max(len(uploads), 1),
               "round-seconds": time.perf_counter() - self._round_started}
        seen = [int(c[records.METRICS][records.EXAMPLES_SEEN]) for c in contents
                if records.EXAMPLES_SEEN in c[records.METRICS]]
        if seen:  # without DP only: a DP reply carries no count
            row["examples-seen"] = sum(seen)
        # Clients' metrics, averaged by FedAvg (examples seen is summed above instead).
        row.update({f"train-{k}" if not k.startswith("train") else k: float(v)
                    for k, v in (metrics or {}).items()
                    if k not in (records.EXAMPLES_SEEN, records.EPSILON, records.UNIFORM_WEIGHT)})
        if epsilons:  # DP: the most any client has spent so far (each client keeps its own ledger)
            row["epsilon-max"] = max(epsilons)
        self.history.append(row)
        return arrays, metrics


def _float32(record: ArrayRecord) -> ArrayRecord:
    if all(str(a.dtype) == "float32" for a in record.values()):
        return record
    return ArrayRecord({k: torch.from_numpy(a.numpy()).float() for k, a in record.items()})

