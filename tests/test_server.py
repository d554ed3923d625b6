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
    evaluator.commit()
    assert evaluator.evaluate(1, arrays) is not None and not evaluator.should_stop
    evaluator.evaluate(2, arrays)
    evaluator.commit()
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
    evaluator.commit()
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


# ----- every reply checked before aggregation; robust aggregators; the minimum --------------------
def _reply(arrays: dict, weight: float = 1.0, node: int = 7) -> Message:
    content = RecordDict({records.ARRAYS: ArrayRecord(arrays),
                          records.METRICS: MetricRecord({records.NUM_EXAMPLES: weight})})
    msg = Message(content=content, dst_node_id=1, message_type="train")
    msg.metadata._src_node_id = node  # as a SuperNode's reply names its sender
    return msg


GLOBAL = {"w": torch.zeros(2, 3), "b": torch.zeros(4)}


def _strategy(cls=None, **kwargs):
    from server.strategy import RecommenderFedAvg as default

    strategy = (cls or default)(should_stop=lambda: False, min_train_nodes=kwargs.pop("min_train_nodes", 1),
                                **kwargs)
    strategy.expect(ArrayRecord({k: v.clone() for k, v in GLOBAL.items()}))
    return strategy


@pytest.mark.parametrize("bad, named", [
    ({"w": torch.full((2, 3), float("nan")), "b": torch.zeros(4)}, "tensor 'w' has non-finite values"),
    ({"w": torch.zeros(3, 2), "b": torch.zeros(4)}, "tensor 'w' has shape (3, 2), expected (2, 3)"),
    ({"w": torch.zeros(2, 3, dtype=torch.float64), "b": torch.zeros(4)}, "tensor 'w' has dtype float64"),
    ({"w": torch.full((2, 3), 1000.0), "b": torch.zeros(4)}, "its update has L2 norm 2.45e+03, above the bound 100"),
    ({"w": torch.zeros(2, 3)}, "1 tensor(s) missing, e.g. 'b'"),
    ({**GLOBAL, "extra": torch.zeros(1)}, "1 tensor(s) the server did not send, e.g. 'extra'"),
])
def test_when_a_reply_is_malformed_then_it_is_dropped_with_its_reason_and_the_round_goes_on(
        task_identity, caplog, bad, named):
    strategy = _strategy(max_update_norm=100.0)
    good = [_reply({"w": torch.ones(2, 3), "b": torch.ones(4)}, node=n) for n in (1, 2)]
    with caplog.at_level("WARNING", logger="server.strategy"):
        arrays, _ = strategy.aggregate_train(1, [good[0], _reply(bad, node=9), good[1]])
    assert torch.equal(arrays.to_torch_state_dict()["w"], torch.ones(2, 3))
    assert strategy.history[0]["clients"] == 2 and strategy.history[0]["dropped"] == 1
    assert f"round 1: dropped the reply of node 9: {named}" in caplog.text


def test_when_a_reply_has_no_valid_weight_then_it_is_dropped(task_identity):
    strategy = _strategy()
    arrays, _ = strategy.aggregate_train(1, [_reply(GLOBAL, weight=float("inf")), _reply(GLOBAL, weight=-1),
                                             _reply({"w": torch.ones(2, 3), "b": torch.ones(4)})])
    assert strategy.history[0]["dropped"] == 2 and torch.equal(arrays.to_torch_state_dict()["b"], torch.ones(4))


def test_when_fewer_valid_replies_than_the_minimum_then_the_round_is_not_aggregated(task_identity, caplog):
    strategy = _strategy(min_train_nodes=2)
    bad = {"w": torch.full((2, 3), float("inf")), "b": torch.zeros(4)}
    with caplog.at_level("WARNING", logger="server.strategy"):
        arrays, metrics = strategy.aggregate_train(1, [_reply(GLOBAL), _reply(bad)])
    assert arrays is None and metrics is None
    assert strategy.history[0]["clients"] == 0 and strategy.history[0]["dropped"] == 1
    assert "round 1 not aggregated: 1 valid reply, fewer than min-train-clients (2)" in caplog.text


@pytest.mark.parametrize("aggregator, expected", [("mean", 25.75), ("median", 1.5), ("trimmed-mean", 1.5)])
def test_when_one_client_sends_an_outlier_then_the_robust_aggregators_resist_it(task_identity, tiny_config,
                                                                                aggregator, expected):
    from server.strategy import build_strategy

    cfg = tiny_config.replace(aggregator=aggregator, trim_fraction=0.25, max_update_norm=0.0, min_train_clients=1)
    strategy = build_strategy(cfg, should_stop=lambda: False)
    strategy.expect(ArrayRecord({k: v.clone() for k, v in GLOBAL.items()}))
    replies = [_reply({"w": torch.full((2, 3), v), "b": torch.zeros(4)}) for v in (1.0, 1.0, 2.0, 99.0)]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays.to_torch_state_dict()["w"].flatten().tolist() == pytest.approx([expected] * 6)


def test_when_a_robust_aggregator_meets_central_or_distributed_dp_then_config_error(tiny_config):
    from common.config import ConfigError

    for dp in ("central", "distributed"):
        with pytest.raises(ConfigError, match="`aggregator` should be 'mean' with `dp` = 'central'"):
            tiny_config.replace(dp=dp, aggregator="median")


# ----- the prompt grid --------------------------------------------------------------------------
class _SlowGrid:
    """A Grid whose replies arrive after a few pulls (and one never)."""

    def __init__(self, ready_after: dict[str, int]) -> None:
        self.ready_after, self.pulls = ready_after, 0

    def push_messages(self, messages):
        return [m for m in messages]  # the 'messages' are their ids here

    def pull_messages(self, ids):
        self.pulls += 1
        out = []
        for i in list(ids):
            if self.ready_after[i] <= self.pulls:
                reply = Message(content=RecordDict(), dst_node_id=1, message_type="train")
                reply.metadata.__dict__["_reply_to_message_id"] = i
                out.append(reply)
        return out

    def get_node_ids(self):
        return [1, 2]


def test_when_replies_arrive_then_the_prompt_grid_returns_them_without_waiting_a_poll_interval(task_identity):
    import time

    from server.grid import PromptGrid

    grid = PromptGrid(_SlowGrid({"a": 1, "b": 3}))
    started = time.monotonic()
    replies = grid.send_and_receive(["a", "b"], timeout=30)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["a", "b"]
    assert time.monotonic() - started < 1.0 and grid.get_node_ids() == [1, 2]  # Flower's Grid sleeps 3 s
    late = PromptGrid(_SlowGrid({"a": 1, "b": 10**9}))
    started = time.monotonic()
    assert [r.metadata.reply_to_message_id for r in late.send_and_receive(["a", "b"], timeout=0.5)] == ["a"]
    assert 0.4 < time.monotonic() - started < 1.5


def test_when_fraction_evaluate_is_set_then_validation_asks_the_same_panel_and_the_test_asks_everyone(
        task_identity):
    from server.evaluation import FederatedMetrics

    class Grid:
        def __init__(self):
            self.nodes, self.asked = list(range(1, 11)), []

        def get_node_ids(self):
            return self.nodes

        def send_and_receive(self, messages, *, timeout=None):
            messages = list(messages)
            self.asked.append(sorted(m.metadata.dst_node_id for m in messages))
            return [Message(content=RecordDict({records.METRICS: MetricRecord({records.EVAL_USERS: 10, "ndcg@10": 2.0})}),
                            reply_to=m) for m in messages]

    grid = Grid()
    source = FederatedMetrics(grid, fraction=0.3, seed=1)
    arrays = ArrayRecord({"w": torch.zeros(2)})
    for server_round in (0, 1):
        assert source.metrics(arrays, "valid", server_round)["clients"] == 3
    assert len(grid.asked[0]) == 3 and grid.asked[0] == grid.asked[1]  # the same users every round
    grid.nodes = [n for n in grid.nodes if n != grid.asked[0][0]]  # one panel member leaves
    source.metrics(arrays, "valid", 2)
    assert len(grid.asked[2]) == 3 and set(grid.asked[0][1:]) < set(grid.asked[2])  # topped up, the rest kept
    assert source.metrics(arrays, "test", 2)["clients"] == 9 and len(grid.asked[3]) == 9
