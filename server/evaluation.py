"""Evaluation of the global recommender each round: early stopping and the best checkpoint.

Where the metrics come from is a :class:`MetricSource`:

* :class:`FederatedMetrics` (default): every client ranks its own users' held-out items with the
  global adapter and replies with metric sums and a user count, Gaussian-noised where its
  device policy says so (see :mod:`client.local_evaluation`); the server divides the totals. No
  review, user id or user vector reaches the server.
* :class:`ServerSideMetrics` (``evaluation = "server"``): the server reads the review file itself.
  A research shortcut for comparisons in simulation; it breaks the privacy model.
"""

from __future__ import annotations

import logging
import math
import random
import time
from typing import Any, Protocol, cast

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid

from common import records
from common.config import RunConfig
from common.metrics import NDCG
from common.recommender import Recommender
from common.run_data import RunData
from server.checkpoints import BEST, LAST, RunDirectory

log = logging.getLogger(__name__)


class MetricSource(Protocol):
    """Gives HR@K, NDCG@K, MRR (and ``num-users``) of some trainable tensors."""

    def metrics(self, arrays: ArrayRecord, target: str, server_round: int) -> dict[str, float]:
        """Metrics of ``arrays`` on the ``valid`` or ``test`` held-out items."""
        ...


class ServerSideMetrics:
    """Ranks held-out items on the server from the review file (simulation research shortcut)."""

    def __init__(self, cfg: RunConfig, recommender: Recommender) -> None:
        self.cfg, self.recommender = cfg, recommender
        self.data = RunData.load(cfg)
        self.valid_users = self.data.eval_users(cfg, "valid")
        log.warning(
            "evaluation = 'server': the server reads %s itself; users' text reaches the "
            "server (use only for research comparisons)",
            cfg.reviews_file,
        )

    def metrics(self, arrays: ArrayRecord, target: str, server_round: int) -> dict[str, float]:
        """Metrics of ``arrays`` over the server's copy of the data."""
        self.recommender.load_state(arrays.to_torch_state_dict())
        users = self.valid_users if target == "valid" else self.data.eval_users(self.cfg, "test")
        return self.recommender.evaluate(users, self.data.split, target=target)


class FederatedMetrics:
    """Asks the connected clients to evaluate ``arrays`` locally; averages their replies.

    With ``fraction`` < 1 (``fraction-evaluate``) the validation goes to a panel of that share of
    the clients, drawn once with ``seed`` and kept while its clients stay connected (topped up
    from the others when some leave), so that rounds are compared on the same users; the test
    goes to every client.
    """

    def __init__(self, grid: Grid, *, timeout: float | None = None, fraction: float = 1.0, seed: int = 0) -> None:
        self.grid, self.timeout, self.fraction, self.seed = grid, timeout, fraction, seed
        self.panel: list[int] = []

    def nodes(self, target: str) -> list[int]:
        """The clients asked to evaluate ``target``."""
        connected = sorted(self.grid.get_node_ids())
        if target == "test" or self.fraction >= 1.0:
            return connected
        size = max(1, math.ceil(self.fraction * len(connected)))
        self.panel = [n for n in self.panel if n in set(connected)]
        if len(self.panel) < size:
            others = [n for n in connected if n not in self.panel]
            random.Random(self.seed).shuffle(others)
            self.panel += others[: size - len(self.panel)]
        return list(self.panel)

    def metrics(self, arrays: ArrayRecord, target: str, server_round: int) -> dict[str, float]:
        """User-weighted means of the clients' metric means."""
        content = RecordDict(
            {
                records.ARRAYS: arrays,
                records.CONFIG: ConfigRecord({records.SERVER_ROUND: server_round, records.EVAL_TARGET: target}),
            }
        )
        nodes = self.nodes(target)
        messages = [Message(content=content, dst_node_id=n, message_type=MessageType.EVALUATE) for n in nodes]
        started = time.perf_counter()
        replies = list(self.grid.send_and_receive(messages, timeout=self.timeout))
        return aggregate_metrics(replies, expected=len(nodes), seconds=time.perf_counter() - started)


def aggregate_metrics(replies: list[Message], *, expected: int, seconds: float = 0.0) -> dict[str, float]:
    """Totals of the clients' metric sums divided by the total of their user counts.

    Clients under a noised-evaluation policy send noised sums and counts; the ratio of the
    totals is then an estimate, and ``num-users`` is a noised count too.
    """
    totals: dict[str, float] = {}
    users, failed = 0.0, 0
    for reply in sorted(replies, key=lambda m: m.metadata.src_node_id):  # sums repeat whatever the arrival order
        if reply.has_error() or records.METRICS not in reply.content:
            failed += 1
            continue
        for key, value in reply.content.metric_records[records.METRICS].items():
            number = float(cast(float, value))
            if key == records.EVAL_USERS:
                users += number
            else:
                totals[key] = totals.get(key, 0.0) + number
    if users <= 0:
        raise RuntimeError(
            f"no client could evaluate ({failed} of {expected} failed or declined, the "
            f"others have no held-out items); see the clients' logs."
        )
    out = {key: value / users for key, value in sorted(totals.items())}
    out.update(
        {
            "num-users": users,
            "clients": float(len(replies) - failed),
            "clients-failed": float(failed + expected - len(replies)),
            "eval-seconds": seconds,
        }
    )
    return out


class RoundEvaluator:
    """Validation after every round; remembers the best round and stops after ``patience``.

    ``evaluate`` scores a round's global model; ``commit`` then saves it as ``last`` (and
    ``best``), after the round's metrics row is written, so that the checkpoints are a
    consistent point to resume from (:mod:`server.resume`). After ``patience`` rounds without
    a better validation NDCG@K, :attr:`should_stop` turns true and the strategy stops sending work.
    """

    def __init__(self, cfg: RunConfig, recommender: Recommender, source: MetricSource, run: RunDirectory) -> None:
        self.cfg = cfg
        self.recommender = recommender
        self.source = source
        self.run = run
        self.key = f"{NDCG}@{cfg.eval_k}"
        self.best_score = float("-inf")
        self.best_round = -1
        self.rounds_without_gain = 0
        self.stopped_at: int | None = None
        self._best_arrays: ArrayRecord | None = None
        self._best_meta: dict = {}
        self._pending: tuple[ArrayRecord, dict, bool] | None = None  # scored, not yet committed

    @property
    def should_stop(self) -> bool:
        """True once validation NDCG has not improved for ``patience`` rounds."""
        return self.stopped_at is not None

    def metrics(self, arrays: ArrayRecord, target: str, server_round: int = 0) -> dict[str, float]:
        """HR@K, NDCG@K, MRR of ``arrays`` on the validation or test items."""
        return self.source.metrics(arrays, target, server_round)

    def evaluate(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Validation metrics of the global model (None after early stopping); :meth:`commit` saves it."""
        if self.should_stop:
            return None
        metrics = self.metrics(arrays, "valid", server_round)
        score = metrics[self.key]
        improved = score > self.best_score
        if improved:
            self.best_score, self.best_round, self.rounds_without_gain = score, server_round, 0
        elif server_round > 0:
            self.rounds_without_gain += 1
            if self.cfg.patience and self.rounds_without_gain >= self.cfg.patience:
                self.stopped_at = server_round
                log.info(
                    "early stopping after round %d: no %s gain for %d rounds (best %.4f in round %d)",
                    server_round,
                    self.key,
                    self.rounds_without_gain,
                    self.best_score,
                    self.best_round,
                )
        meta = {"round": server_round, "valid": metrics, "config": self.cfg.to_dict(), "early-stopping": self.state()}
        self._pending = (arrays, meta, improved)
        log.info("round %d validation: %s", server_round, _fmt(metrics))
        return MetricRecord({f"valid-{k}": float(v) for k, v in metrics.items()})

    def commit(self) -> None:
        """Save the round just evaluated as the ``last`` checkpoint, and as ``best`` if it gained."""
        if self._pending is None:
            return
        arrays, meta, improved = self._pending
        self._pending = None
        self.recommender.load_state(arrays.to_torch_state_dict())
        self.run.save(LAST, self.recommender.model, meta=meta)
        if improved:
            self.run.save(BEST, self.recommender.model, meta=meta)
            self._best_arrays, self._best_meta = ArrayRecord(self.recommender.state()), meta

    def state(self) -> dict[str, Any]:
        """The early-stopping state (saved with every ``last`` checkpoint)."""
        return {
            "best-round": self.best_round,
            "best-score": self.best_score,
            "rounds-without-gain": self.rounds_without_gain,
            "stopped-at": self.stopped_at,
        }

    def restore(self, state: dict[str, Any], best_arrays: ArrayRecord, best_meta: dict) -> None:
        """Continue from :meth:`state` and the best round's tensors (a resumed run)."""
        self.best_round, self.best_score = int(state["best-round"]), float(state["best-score"])
        self.rounds_without_gain, self.stopped_at = int(state["rounds-without-gain"]), state["stopped-at"]
        self._best_arrays, self._best_meta = best_arrays, best_meta

    def attach_to_best(self, released: dict) -> None:
        """Add released statistics that do not change the ranking (the rating offsets) to the best
        round's tensors and checkpoint, so that the best model also predicts stars."""
        state = {**self.best_arrays().to_torch_state_dict(), **released}
        self.recommender.load_state(state)
        self._best_arrays = ArrayRecord(self.recommender.state())
        self.run.save(BEST, self.recommender.model, meta=self._best_meta)

    def best_arrays(self) -> ArrayRecord:
        """The trainable tensors of the best round (also saved under ``checkpoints/best``)."""
        if self._best_arrays is None:
            raise RuntimeError("no round has been evaluated yet; there is no best adapter.")
        return self._best_arrays


def _fmt(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
