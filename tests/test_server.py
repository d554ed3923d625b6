"""Server pieces: early stopping on validation, best checkpoint, strategy bookkeeping."""

import json

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from common import records
from common.model import build_model, trainable_state
from common.recommender import Recommender
from common.run_data import load_catalogue
from server.checkpoints import RunDirectory
from server.evaluation import RoundEvaluator, ServerSideMetrics, aggregate_metrics
from server.strategy import RecommenderFedAvg


@pytest.fixture()
def evaluator(tiny_config):
    cfg = tiny_config.replace(patience=2, max_eval_users=30, evaluation="server")
    run = RunDirectory.create(cfg, "unit")
    recommender = Recommender(cfg, load_catalogue(cfg))
    yield RoundEvaluator(cfg, recommender, ServerSideMetrics(cfg, recommender), run)
    run.close()


def test_when_no_gain_for_patience_rounds_then_stop_and_keep_best(evaluator):
    arrays = ArrayRecord(trainable_state(build_model(evaluator.cfg, num_items=len(evaluator.recommender.catalogue))))
    assert evaluator.evaluate(0, arrays) is not None
    assert evaluator.evaluate(1, arrays) is not None and not evaluator.should_stop
    evaluator.evaluate(2, arrays)
    assert evaluator.should_stop and evaluator.stopped_at == 2
    assert evaluator.best_round == 0
    assert evaluator.evaluate(3, arrays) is None  # nothing is evaluated after the stop
    meta = json.loads((evaluator.run.checkpoints / "best" / "privrec.json").read_text())
    assert meta["round"] == 0


def test_when_validation_improves_then_best_checkpoint_moves(evaluator):
    arrays = ArrayRecord(trainable_state(build_model(evaluator.cfg, num_items=len(evaluator.recommender.catalogue))))
    evaluator.evaluate(0, arrays)
    evaluator.best_score = -1.0  # any real score now counts as a gain
    evaluator.evaluate(1, arrays)
    assert evaluator.best_round == 1
    meta = json.loads((evaluator.run.checkpoints / "best" / "privrec.json").read_text())
    assert meta["round"] == 1 and "ndcg@10" in meta["valid"]


def test_when_stopped_then_strategy_sends_no_work():
    strategy = RecommenderFedAvg(should_stop=lambda: True)
    assert list(strategy.configure_train(4, ArrayRecord(), ConfigRecord(), grid=None)) == []


@pytest.fixture()
def task_identity(monkeypatch):
    """Messages built outside a Flower run need a task identity, as the runtime sets it."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr in ("_task_id", "_run_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, attr, 1)


def test_when_replies_aggregated_then_round_is_recorded(task_identity):
    strategy = RecommenderFedAvg(should_stop=lambda: False)
    replies = []
    for weight, value in ((1, 0.0), (3, 4.0)):
        content = RecordDict({
            records.ARRAYS: ArrayRecord({"w": torch.full((2, 2), value)}),
            records.METRICS: MetricRecord({records.NUM_EXAMPLES: weight, records.TRAIN_LOSS: value,
                                           records.EXAMPLES_SEEN: 10 * weight}),
        })
        replies.append(Message(content=content, dst_node_id=1, message_type="train"))
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert torch.allclose(arrays.to_torch_state_dict()["w"], torch.full((2, 2), 3.0))
    row = strategy.history[0]
    assert row["clients"] == 2 and row["examples-seen"] == 40
    assert row["train-loss"] == pytest.approx(3.0)
    assert row["upload-bytes-per-client"] >= 16


def test_when_clients_report_sums_then_server_divides_the_totals(task_identity):
    replies = []
    for users, ndcg in ((10, 0.2), (30, 0.6), (0, 0.0)):
        metrics = {records.EVAL_USERS: users, "ndcg@10": ndcg * users}  # sums, as clients send them
        replies.append(Message(content=RecordDict({records.METRICS: MetricRecord(metrics)}),
                               dst_node_id=1, message_type="evaluate"))
    out = aggregate_metrics(replies, expected=4)
    assert out["ndcg@10"] == pytest.approx(0.5)
    assert out["num-users"] == 40 and out["clients"] == 3 and out["clients-failed"] == 1


def test_when_clients_send_noised_sums_then_the_ratio_of_totals_is_unbiased(task_identity):
    rng = np.random.default_rng(0)
    estimates = []
    for _ in range(300):
        replies = [Message(content=RecordDict({records.METRICS: MetricRecord(
            {records.EVAL_USERS: 100 + rng.normal(0, 10), "ndcg@10": 20 + rng.normal(0, 10)})}),
            dst_node_id=1, message_type="evaluate") for _ in range(10)]
        estimates.append(aggregate_metrics(replies, expected=10)["ndcg@10"])
    assert np.mean(estimates) == pytest.approx(0.2, abs=0.005)


def test_when_no_client_can_evaluate_then_clear_error(task_identity):
    with pytest.raises(RuntimeError, match="no client could evaluate"):
        aggregate_metrics([], expected=2)


def test_when_clients_upload_float16_then_server_averages_in_float32(task_identity):
    strategy = RecommenderFedAvg(should_stop=lambda: False)
    replies = []
    for weight, value in ((1, 1.0), (1, 2.0)):
        content = RecordDict({
            records.ARRAYS: ArrayRecord({"w": torch.full((4, 4), value, dtype=torch.float16)}),
            records.METRICS: MetricRecord({records.NUM_EXAMPLES: weight}),
        })
        replies.append(Message(content=content, dst_node_id=1, message_type="train"))
    arrays, _ = strategy.aggregate_train(1, replies)
    w = arrays.to_torch_state_dict()["w"]
    assert w.dtype == torch.float32 and torch.allclose(w, torch.full((4, 4), 1.5))
    fp32 = sum(len(a.data) for a in ArrayRecord({"w": torch.zeros((4, 4))}).values())
    assert strategy.history[0]["upload-bytes-per-client"] == fp32 - 16 * 2  # sent as 2-byte floats
