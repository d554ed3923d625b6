"""Continuing an interrupted run from its last completed round (``privrec simulate --resume RUN_DIR``).

A completed round leaves, in this order and each written atomically (:mod:`common.files`): its
row in ``metrics.json``, the global model as ``checkpoints/last`` with the early-stopping state in
its metadata, and ``checkpoints/best`` when it gained. The ``last`` checkpoint is the resume
point: rows after its round are dropped and those rounds are trained again; a ``best`` that a
kill left behind is repaired from ``last``. With the same seed and DP off, the resumed run ends
with the model and metrics of an uninterrupted one: client sampling and local training are
seeded per round, so round r is the same whichever process runs it.

The privacy accounting needs nothing from here: each device's ledger is its own (a round it
trained before the kill stays spent, and a repeated round is charged again, because its update
did leave the device), and the central DP ledger lives in the runs folder. A run under
distributed DP is a single secure release and cannot be resumed part-way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from common.config import RunConfig
from common.recommender import Recommender
from server.checkpoints import BEST, CONFIG_FILE, LAST, SUMMARY_FILE, RunDirectory

log = logging.getLogger(__name__)


class ResumeError(RuntimeError):
    """A run directory that cannot be continued (the message says why and what to do)."""


def resumable(run: RunDirectory) -> RunConfig:
    """The config of ``run`` if it can be continued; else :class:`ResumeError`."""
    if not (run.path / CONFIG_FILE).is_file():
        raise ResumeError(f"{run.path}: not a run directory (no {CONFIG_FILE}); pass the folder a run wrote.")
    cfg = run.config().replace(run_dir=str(run.path.parent))  # its folder, wherever it was started from
    summary = run.path / SUMMARY_FILE
    if summary.is_file() and not json.loads(summary.read_text()).get("failed"):
        raise ResumeError(f"{run.path} finished (see {summary}); there is nothing to resume.")
    if cfg.dp == "distributed":
        raise ResumeError(
            f"{run.path} ran under dp = 'distributed', a single secure release that cannot be resumed "
            "part-way; start a new run (the devices' ledgers keep what this one spent)."
        )
    _last(run)
    return cfg


def _last(run: RunDirectory) -> tuple[Path, dict[str, Any]]:
    """The ``last`` checkpoint of ``run`` and its metadata: the resume point."""
    last, meta = run.checkpoint(LAST), run.checkpoint_meta(LAST)
    if last is None or meta is None:
        raise ResumeError(f"{run.path} has no completed round to continue from; start a new run.")
    if "early-stopping" not in meta:
        raise ResumeError(f"{run.path} was written by a PrivRec without resume points; start a new run.")
    return last, meta


@dataclass(frozen=True)
class ResumePoint:
    """What a run had completed: its round, global model, metrics rows and early-stopping state."""

    round: int
    arrays: ArrayRecord
    history: list[dict[str, Any]]
    early_stopping: dict[str, Any]
    best_arrays: ArrayRecord
    best_meta: dict[str, Any]

    @classmethod
    def load(cls, run: RunDirectory, recommender: Recommender) -> ResumePoint:
        """Read the resume point of ``run`` (the model is loaded into ``recommender`` on the way)."""
        last, meta = _last(run)
        done, state = int(meta["round"]), meta["early-stopping"]
        recommender.load_checkpoint(last)
        arrays = ArrayRecord(recommender.state())
        best_meta = run.checkpoint_meta(BEST)
        if int(state["best-round"]) == done:
            if best_meta != meta:  # the kill came before `best` was saved
                run.save(BEST, recommender.model, meta=meta)
            best_arrays, best_meta = arrays, meta
        elif (best := run.checkpoint(BEST)) is not None and best_meta is not None:
            recommender.load_checkpoint(best)
            best_arrays = ArrayRecord(recommender.state())
        else:
            raise ResumeError(f"{run.path}: checkpoints/best is missing; start a new run.")
        if int(best_meta["round"]) != int(state["best-round"]):
            raise ResumeError(
                f"{run.path}: checkpoints/best is from round {best_meta['round']}, the early-stopping state "
                f"names round {state['best-round']}; the folder was changed by hand, start a new run."
            )
        history = [row for row in run.metrics() if int(row.get("round", 0)) <= done]
        return cls(done, arrays, history, state, best_arrays, best_meta)


class ResumedStrategy(Strategy):
    """``strategy`` continuing after round ``done``: Flower's rounds 1, 2, ... are ``done`` + 1, + 2, ...

    The inner strategy, the clients and the evaluation all see the run's own round numbers; the
    model from before the interruption is not evaluated again."""

    def __init__(self, strategy: Strategy, done: int) -> None:
        self.strategy, self.done = strategy, done

    def start(  # type: ignore[override]
        self,
        *,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int,
        timeout: float,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None],
    ) -> Result:
        """Flower's round loop over the rounds left."""
        log.info("resuming after round %d of %d", self.done, num_rounds)

        def shifted(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            return None if server_round == 0 else evaluate_fn(server_round + self.done, arrays)

        return super().start(
            grid=grid,
            initial_arrays=initial_arrays,
            num_rounds=num_rounds - self.done,
            timeout=timeout,
            evaluate_fn=shifted,
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The inner strategy's round ``server_round`` + ``done``."""
        return self.strategy.configure_train(server_round + self.done, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The inner strategy's round ``server_round`` + ``done``."""
        return self.strategy.aggregate_train(server_round + self.done, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The inner strategy's round ``server_round`` + ``done``."""
        return self.strategy.configure_evaluate(server_round + self.done, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """The inner strategy's round ``server_round`` + ``done``."""
        return self.strategy.aggregate_evaluate(server_round + self.done, replies)

    def summary(self) -> None:
        """The inner strategy's summary."""
        self.strategy.summary()
