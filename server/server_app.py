"""PrivRec ServerApp: federated training of the recommender's adapters, start to finish."""

from __future__ import annotations

import logging
import time

from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from common.config import RunConfig
from common.recommender import Recommender
from common.run_data import load_catalogue
from server import central_dp
from server.checkpoints import RunDirectory
from server.evaluation import FederatedMetrics, RoundEvaluator, ServerSideMetrics
from server.strategy import RecommenderFedAvg

log = logging.getLogger(__name__)


def build_server_app(config: RunConfig | None = None, *, run_name: str = "") -> ServerApp:
    """A ServerApp for ``config``; without one it reads ``context.run_config`` (``flwr run``)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = config or RunConfig.from_mapping(context.run_config)
        run_federation(grid, cfg, run_name=run_name)

    return app


def run_federation(grid: Grid, cfg: RunConfig, *, run_name: str = "") -> RunDirectory:
    """The story of a run: data, initial adapter, strategy, rounds, best checkpoint on test."""
    run = RunDirectory.create(cfg, run_name)
    log.info("run directory: %s", run.path)
    started = time.perf_counter()
    try:
        # 1. The model over the public catalogue, and the initial global adapter. The server
        #    holds no reviews: clients evaluate on their own data unless evaluation = "server".
        recommender = Recommender(cfg, load_catalogue(cfg))
        source = (ServerSideMetrics(cfg, recommender) if cfg.evaluation == "server"
                  else FederatedMetrics(grid))
        evaluator = RoundEvaluator(cfg, recommender, source, run)
        initial = ArrayRecord(recommender.state())  # seeded by `seed`

        # 2. FedAvg over adapter tensors only, stopping early on validation NDCG.
        strategy = RecommenderFedAvg(
            should_stop=lambda: evaluator.should_stop,
            uniform=cfg.dp != "none",
            fraction_train=cfg.fraction_train,
            min_train_nodes=cfg.min_train_clients,
            min_available_nodes=cfg.min_train_clients,
        )
        runner, central = strategy, None
        if cfg.dp == "central":  # clients clip, the server adds noise (Flower's wrapper, our release)
            runner, central = central_dp.wrap(strategy, cfg)

        # 3. Train, evaluating the global model after every round.
        def evaluate(server_round: int, arrays: ArrayRecord):
            metrics = evaluator.evaluate(server_round, arrays)
            _merge_round(strategy.history, server_round, metrics)
            run.write_metrics(strategy.history)
            return metrics

        runner.start(grid=grid, initial_arrays=initial, num_rounds=cfg.num_rounds,
                     evaluate_fn=evaluate)

        # 4. The best round's adapter on the test items.
        test = evaluator.metrics(evaluator.best_arrays(), "test", evaluator.best_round)
        summary = {"best-round": evaluator.best_round, "stopped-early-at": evaluator.stopped_at,
                   "rounds-trained": sum(1 for r in strategy.history if r.get("clients")),
                   "clients-declined": sum(int(r.get("declined", 0)) for r in strategy.history),
                   "dp": cfg.dp, "epsilon-max": max((r["epsilon-max"] for r in strategy.history
                                                     if "epsilon-max" in r), default=None),
                   "central-epsilon": central.epsilon() if central else None,
                   "valid-best": evaluator.best_score, "test": test,
                   "evaluation": cfg.evaluation, "wall-seconds": time.perf_counter() - started,
                   "trainable-parameters": sum(v.numel() for v in recommender.state().values())}
        run.write_summary(summary)
        log.info("test (best round %d): %s", evaluator.best_round,
                 ", ".join(f"{k}={v:.4f}" for k, v in test.items()))
        return run
    finally:
        run.close()


def _merge_round(history: list[dict], server_round: int, metrics) -> None:
    if metrics is None:
        return
    row = next((r for r in history if r.get("round") == server_round), None)
    if row is None:
        row = {"round": server_round}
        history.append(row)
    row.update({k: float(v) for k, v in metrics.items()})


app = build_server_app()
