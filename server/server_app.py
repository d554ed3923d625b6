"""PrivRec ServerApp: federated training of the recommender's adapters, start to finish."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy

from common import records
from common.config import ConfigError, RunConfig
from common.federation_dp import FederationAccountant
from common.model import ITEM_BIAS, ITEM_ITEM_ROWS, ITEM_ITEM_WEIGHT, ITEM_RATING_MEAN, ITEM_RATING_OFFSETS
from common.ratings import item_offsets
from common.recommender import Recommender
from common.run_data import load_catalogue
from common.sketch import ReleaseLayout
from server import central_dp
from server.checkpoints import RunDirectory
from server.evaluation import FederatedMetrics, RoundEvaluator, ServerSideMetrics
from server.grid import PromptGrid
from server.outcome import RunFailed, failure
from server.progress import RoundProgress
from server.resume import ResumedStrategy, ResumePoint, resumable
from server.secure_release import ReleaseError, ease, head_items, popularity_prior, secure_release
from server.strategy import build_strategy

log = logging.getLogger(__name__)


def build_server_app(config: RunConfig | None = None, *, run_name: str = "", resume: bool = False) -> ServerApp:
    """A ServerApp for ``config``; without one it reads ``context.run_config`` (``flwr run``).
    With ``resume`` it continues the run directory ``run_name`` (:mod:`server.resume`)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = config or RunConfig.from_mapping(context.run_config)
        run_federation(grid, cfg, run_name=run_name, context=context, resume=resume)

    return app


def run_federation(
    grid: Grid, cfg: RunConfig, *, run_name: str = "", context: Context | None = None, resume: bool = False
) -> RunDirectory:
    """The story of a run: data, initial adapter, strategy, rounds, best checkpoint on test.

    With ``dp`` = 'distributed' the rounds are one secure release instead (``context`` is the
    ServerApp's, which Flower's SecAgg+ workflow needs). With ``resume`` the run directory
    ``run_name`` is continued from its last completed round."""
    grid = PromptGrid(grid)  # replies are used as soon as they arrive (Flower's Grid polls every 3 s)
    run = RunDirectory.reopen(Path(cfg.run_dir) / run_name) if resume else RunDirectory.create(cfg, run_name)
    log.info("run directory: %s", run.path)
    if context is not None:  # the devices' ledgers name the Flower run (a resumed run is a new one)
        run.add_flower_run(int(context.run_id))
    started = time.perf_counter()
    try:
        # 1. The model over the public catalogue, and the initial global adapter. The server
        #    holds no reviews: clients evaluate on their own data unless evaluation = "server".
        recommender = Recommender(cfg, load_catalogue(cfg))
        source = (
            ServerSideMetrics(cfg, recommender)
            if cfg.evaluation == "server"
            else FederatedMetrics(grid, timeout=cfg.round_timeout, fraction=cfg.fraction_evaluate, seed=cfg.seed)
        )
        evaluator = RoundEvaluator(cfg, recommender, source, run)
        initial = ArrayRecord(recommender.state())  # seeded by `seed`
        point = None
        if resume:  # the last completed round's model, metrics and early-stopping state
            resumable(run)
            point = ResumePoint.load(run, recommender)
            evaluator.restore(point.early_stopping, point.best_arrays, point.best_meta)
            initial = point.arrays

        if cfg.dp == "distributed":  # one secure, user-level DP release instead of FedAvg rounds
            release = DistributedRun(cfg, recommender, evaluator, run)
            release.start(grid, context, initial)
            return _finish(
                run,
                cfg,
                evaluator,
                release.history,
                recommender,
                started,
                context,
                federation_epsilon=release.accountant.epsilon(),
                federation_accountant={
                    "accountant": "rdp",
                    "delta": release.accountant.delta,
                    "history": [list(h) for h in release.accountant.history],
                },
            )

        # 2. FedAvg (or a robust aggregate) over checked adapter tensors, stopping early on validation NDCG.
        strategy = build_strategy(cfg, should_stop=lambda: evaluator.should_stop)
        runner: Strategy = strategy
        central = None
        if cfg.dp == "central":  # clients clip, the server adds noise (Flower's wrapper, our release)
            runner, central = central_dp.wrap(strategy, cfg)
        if point is not None:
            strategy.history = point.history
            runner = ResumedStrategy(runner, point.round)

        # 3. Train, evaluating the global model after every round.
        progress = RoundProgress(cfg.num_rounds, evaluator.key)

        def evaluate(server_round: int, arrays: ArrayRecord):
            return _evaluate_round(evaluator, progress, run, strategy.history, server_round, arrays)

        runner.start(
            grid=grid,
            initial_arrays=initial,
            num_rounds=cfg.num_rounds,
            timeout=cfg.round_timeout,
            evaluate_fn=evaluate,
        )

        # 4. The best round's adapter on the test items.
        return _finish(
            run,
            cfg,
            evaluator,
            strategy.history,
            recommender,
            started,
            context,
            central_epsilon=central.epsilon() if central else None,
            resumed_after=point.round if point else None,
        )
    finally:
        run.close()


def _finish(
    run: RunDirectory,
    cfg: RunConfig,
    evaluator: RoundEvaluator,
    history: list[dict],
    recommender: Recommender,
    started: float,
    context: Context | None,
    resumed_after: int | None = None,
    **privacy,
) -> RunDirectory:
    """Score the best round on the test items and write the run's summary (with the Flower run ids,
    which the devices' ledgers and transparency logs name: one, or one per start of a resumed run;
    and the federation's accountant history, from which an audit recomputes epsilon)."""
    failed = failure(history, cfg.min_train_clients)
    test = None if failed else evaluator.metrics(evaluator.best_arrays(), "test", evaluator.best_round)
    summary = {
        "best-round": evaluator.best_round,
        "stopped-early-at": evaluator.stopped_at,
        "rounds-trained": sum(1 for r in history if r.get("clients")),
        "clients-declined": sum(int(r.get("declined", 0)) for r in history),
        "dp": cfg.dp,
        "epsilon-max": max((r["epsilon-max"] for r in history if "epsilon-max" in r), default=None),
        "central-epsilon": None,
        "federation-epsilon": None,
        **{k.replace("_", "-"): v for k, v in privacy.items()},
        "run-id": int(context.run_id) if context is not None else None,
        "run-ids": run.flower_runs(),
        "valid-best": evaluator.best_score,
        "test": test,
        "evaluation": cfg.evaluation,
        "wall-seconds": time.perf_counter() - started,
        "resumed-after-round": resumed_after,
        "trainable-parameters": sum(v.numel() for v in recommender.state().values()),
    }
    if failed or test is None:
        run.write_summary({**summary, "failed": failed})
        raise RunFailed(failed or "no round was trained")
    run.write_summary(summary)
    log.info("test (best round %d): %s", evaluator.best_round, ", ".join(f"{k}={v:.4f}" for k, v in test.items()))
    return run


class DistributedRun:
    """A run under distributed DP: the untrained model, one secure release, the model with it.

    Round 0 evaluates the zero-shot model (public weights only); round 1 is the release of the
    users' recent item counts, whose noised sum becomes the per-item offsets (a DP popularity
    prior added to the text scores), evaluated like any round.
    """

    def __init__(self, cfg: RunConfig, recommender: Recommender, evaluator: RoundEvaluator, run: RunDirectory) -> None:
        self.cfg, self.recommender, self.evaluator, self.run = cfg, recommender, evaluator, run
        self.accountant = FederationAccountant(cfg.target_delta)
        self.history: list[dict] = []
        self.progress = RoundProgress(1, evaluator.key)

    def start(self, grid: Grid, context: Context | None, initial: ArrayRecord) -> None:
        if context is None:
            raise RuntimeError("dp = 'distributed' needs the ServerApp's context for SecAgg+")
        if self.cfg.release_head_items > len(self.recommender.catalogue):
            raise ConfigError(
                f"`release-head-items` {self.cfg.release_head_items} is larger than the catalogue "
                f"({len(self.recommender.catalogue)} items); lower it"
            )
        if self.cfg.num_rounds > 1:
            log.info(
                "dp = 'distributed': the secure release is this run's only round (num-rounds is an upper "
                "bound; DP-SGD rounds after it did not gain in scripts/explore_federated_sgd.py)"
            )
        self._evaluate(0, initial)
        started = time.perf_counter()
        try:
            release = secure_release(grid, context, self.cfg, self.accountant)
        except ReleaseError as err:  # too few clients: nothing released, nothing spent; the run failed
            log.info("round 1: %s", err)
            self.history.append(
                {
                    "round": 1,
                    "clients": 0,
                    "round-seconds": time.perf_counter() - started,
                    "federation-epsilon": self.accountant.epsilon(),
                    "failure": str(err),
                }
            )
            self.run.write_metrics(self.history)
            return
        state = {name: tensor.clone() for name, tensor in initial.to_torch_state_dict().items()}
        layout = ReleaseLayout(self.recommender.catalogue.ids, self.cfg.release_width)
        counts = layout.decode(release.total[: layout.length])
        prior = popularity_prior(counts, self.cfg.prior_strength)
        state[ITEM_BIAS] = state[ITEM_BIAS] + torch.as_tensor(prior, dtype=state[ITEM_BIAS].dtype)
        if self.cfg.releases_ratings:  # the rating sums follow the counts in the same vector
            sums = layout.decode(release.total[layout.length :])
            offsets, mean = item_offsets(counts, sums, self.cfg.rating_shrinkage)
            state[ITEM_RATING_OFFSETS] = torch.as_tensor(offsets, dtype=torch.float32)
            state[ITEM_RATING_MEAN] = torch.tensor(mean, dtype=torch.float32)
            log.info(
                "round 1: released mean rating %.2f stars; item offsets from %+.2f to %+.2f",
                mean,
                offsets.min(),
                offsets.max(),
            )
        releases = [release]
        if self.cfg.release_head_items:  # the head items' Gram, for an EASE model scored on the devices
            head = head_items(counts, self.cfg.release_head_items)
            try:
                gram = secure_release(
                    grid,
                    context,
                    self.cfg,
                    self.accountant,
                    records.RELEASE_HEAD_GRAM,
                    {records.RELEASE_HEAD: ",".join(str(int(r)) for r in head)},
                )
            except ReleaseError as err:  # the counts stay released; the run goes on without EASE
                log.warning("round 1: %s", err)
            else:
                releases.append(gram)
                state[ITEM_ITEM_WEIGHT] = torch.as_tensor(
                    ease(gram.total, len(head), self.cfg.ease_lambda), dtype=torch.float32
                )
                state[ITEM_ITEM_ROWS] = torch.as_tensor(head, dtype=torch.float32)
        self.history.append(
            {
                "round": 1,
                "clients": min(r.contributors for r in releases),
                "round-seconds": time.perf_counter() - started,
                "upload-bytes-per-client": sum(r.upload_bytes_per_client for r in releases),
                "noise-multiplier": release.noise_multiplier,
                "federation-epsilon": self.accountant.epsilon(),
            }
        )
        self._evaluate(1, ArrayRecord(state))
        if self.cfg.releases_ratings:  # they do not change the ranking: the best round gets them too
            self.evaluator.attach_to_best({name: state[name] for name in (ITEM_RATING_OFFSETS, ITEM_RATING_MEAN)})

    def _evaluate(self, server_round: int, arrays: ArrayRecord) -> None:
        _evaluate_round(self.evaluator, self.progress, self.run, self.history, server_round, arrays)


def _evaluate_round(
    evaluator: RoundEvaluator,
    progress: RoundProgress,
    run: RunDirectory,
    history: list[dict],
    server_round: int,
    arrays: ArrayRecord,
):
    """Validate a round's global model, show it, write its metrics row, then checkpoint it: in that
    order, so that the ``last`` checkpoint is a resume point whose row is on disk (:mod:`server.resume`)."""
    metrics = evaluator.evaluate(server_round, arrays)
    progress.report(_merge_round(history, server_round, metrics))
    run.write_metrics(history)
    evaluator.commit()
    return metrics


def _merge_round(history: list[dict], server_round: int, metrics) -> dict | None:
    """The round's row of ``history`` (added if new) with ``metrics`` merged in; None when the round
    was not evaluated (after early stopping)."""
    if metrics is None:
        return None
    row = next((r for r in history if r.get("round") == server_round), None)
    if row is None:
        row = {"round": server_round}
        history.append(row)
    row.update({k: float(v) for k, v in metrics.items()})
    return row


app = build_server_app()
