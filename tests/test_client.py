"""The ClientApp's real replies, and the egress guard that stands between them and the network."""

import pytest
import torch
from flwr.app import (ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord,
                      RecordDict)
from flwr.clientapp import ClientApp

from client.client_app import build_client_app, open_local_data
from client.egress import EVALUATE_METRICS, TRAIN_METRICS, EgressError, check_reply, egress_guard
from common import records
from common.model import build_model, trainable_state
from common.run_data import RunData, load_catalogue


@pytest.fixture()
def task_identity(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    for attr in ("_task_id", "_run_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, attr, 1)


def _context(partition: int = 1) -> Context:
    return Context(run_id=1, node_id=1, node_config={records.PARTITION_ID: partition, records.NUM_PARTITIONS: 3},
                   state=RecordDict(), run_config={})


def _message(cfg, kind: str, **config) -> tuple[Message, dict]:
    initial = trainable_state(build_model(cfg, num_items=len(load_catalogue(cfg))))
    content = RecordDict({records.ARRAYS: ArrayRecord(initial),
                          records.CONFIG: ConfigRecord({records.SERVER_ROUND: 1, **config})})
    return Message(content=content, dst_node_id=1, message_type=kind), initial


@pytest.mark.parametrize("item_embeddings", [False, True])
def test_when_client_trains_then_reply_holds_only_adapter_tensors_and_numbers(
        tiny_config, task_identity, item_embeddings):
    cfg = tiny_config.replace(item_embeddings=item_embeddings, local_steps=2)
    msg, initial = _message(cfg, MessageType.TRAIN)

    reply = build_client_app(cfg)(msg, _context())

    assert not reply.has_error(), reply.error
    assert set(reply.content.keys()) == {records.ARRAYS, records.METRICS}
    arrays = reply.content[records.ARRAYS].to_torch_state_dict()
    assert set(arrays) == set(initial)
    assert all(tuple(arrays[k].shape) == tuple(initial[k].shape) for k in initial)
    assert any(not torch.equal(arrays[k], initial[k]) for k in initial)
    metrics = reply.content[records.METRICS]
    assert set(metrics) <= TRAIN_METRICS
    assert all(isinstance(v, (int, float)) for v in metrics.values())
    local = open_local_data(cfg, _context())
    assert metrics[records.NUM_EXAMPLES] == len(local.users)
    raw_users = RunData.load(cfg).client_users(cfg, 1)
    assert len(local.users) == len(raw_users) and not set(local.users) & set(raw_users)  # pseudonyms


def test_when_client_evaluates_then_reply_is_metric_means_only(tiny_config, task_identity):
    msg, _ = _message(tiny_config, MessageType.EVALUATE, **{records.EVAL_TARGET: "valid"})

    reply = build_client_app(tiny_config)(msg, _context())

    assert not reply.has_error(), reply.error
    assert set(reply.content.keys()) == {records.METRICS}
    metrics = reply.content[records.METRICS]
    assert set(metrics) <= EVALUATE_METRICS | {"hr@10", "ndcg@10"}
    assert 0.0 <= metrics["ndcg@10"] <= 1.0 and metrics[records.EVAL_USERS] > 0


def _rogue_app(extra: dict) -> ClientApp:
    app = ClientApp(mods=[egress_guard])

    @app.train()
    def train(msg, context):
        content = RecordDict({records.ARRAYS: msg.content[records.ARRAYS],
                              records.METRICS: MetricRecord({records.NUM_EXAMPLES: 3})})
        for key, value in extra.items():
            content[key] = value
        return Message(content=content, reply_to=msg)

    return app


def test_when_handler_adds_a_string_then_guard_refuses_to_send(tiny_config, task_identity):
    msg, _ = _message(tiny_config, MessageType.TRAIN)
    reply = _rogue_app({"leak": ConfigRecord({"review": "I love this pedal, Quinn"})})(msg, _context())
    assert reply.has_error() and "not allowed" in reply.error.reason
    assert not reply.has_content()


def _reply(msg: Message, content: RecordDict) -> Message:
    return Message(content=content, reply_to=msg)


@pytest.mark.parametrize("tamper, message", [
    (lambda a: a.__setitem__("user_vectors", ArrayRecord({"u": torch.zeros(3, 4)})["u"]), "tensor names differ"),
    (lambda a: a.__setitem__(next(iter(a.keys())), ArrayRecord({"x": torch.zeros(2, 2)})["x"]), "has shape"),
    (lambda a: a.__setitem__(next(iter(a.keys())),
                             ArrayRecord({"x": torch.zeros(a[next(iter(a.keys()))].shape, dtype=torch.int64)})["x"]),
     "dtype"),
])
def test_when_arrays_differ_from_the_servers_then_refused(tiny_config, task_identity, tamper, message):
    msg, initial = _message(tiny_config, MessageType.TRAIN)
    arrays = ArrayRecord(initial)
    tamper(arrays)
    reply = _reply(msg, RecordDict({records.ARRAYS: arrays, records.METRICS: MetricRecord({records.NUM_EXAMPLES: 1})}))
    with pytest.raises(EgressError, match=message):
        check_reply(msg, reply)


@pytest.mark.parametrize("metrics, message", [
    ({"user-42-loss": 0.3}, "not on the allow-list"),
    ({records.TRAIN_LOSS: [0.1, 0.2, 0.3]}, "one finite number"),
    ({records.TRAIN_LOSS: float("nan")}, "one finite number"),
])
def test_when_metrics_not_allowed_then_refused(tiny_config, task_identity, metrics, message):
    msg, initial = _message(tiny_config, MessageType.TRAIN)
    reply = _reply(msg, RecordDict({records.ARRAYS: ArrayRecord(initial), records.METRICS: MetricRecord(metrics)}))
    with pytest.raises(EgressError, match=message):
        check_reply(msg, reply)


def test_when_evaluate_reply_carries_tensors_then_refused(tiny_config, task_identity):
    msg, initial = _message(tiny_config, MessageType.EVALUATE)
    reply = _reply(msg, RecordDict({records.ARRAYS: ArrayRecord(initial),
                                    records.METRICS: MetricRecord({records.NUM_EXAMPLES: 1})}))
    with pytest.raises(EgressError, match="not allowed"):
        check_reply(msg, reply)


def test_when_upload_dtype_float16_then_half_the_bytes_leave(tiny_config, task_identity):
    cfg = tiny_config.replace(local_steps=1, upload_dtype="float16")
    msg, initial = _message(cfg, MessageType.TRAIN)
    reply = build_client_app(cfg)(msg, _context())
    assert not reply.has_error(), reply.error
    arrays = reply.content[records.ARRAYS]
    assert {str(a.dtype) for a in arrays.values()} == {"float16"}
    sent = sum(len(a.data) for a in arrays.values())
    full = sum(len(a.data) for a in ArrayRecord(initial).values())
    assert sent < 0.55 * full
