"""The ClientApp's real replies, and the egress guard that stands between them and the network."""

from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

import client.local_training
from client.client_app import build_client_app, open_local_data
from client.egress import DP_TRAIN_METRICS, EVALUATE_METRICS, TRAIN_METRICS, EgressError, check_reply, egress_guard
from client.encryption import KdfSettings, Secret, change_secret
from client.policy import PrivacyPolicy, policy_path
from common import records
from common.run_data import RunData
from helpers import initial_state, node_context, simulated_context


def _context(partition: int = 1) -> Context:
    return simulated_context(partition)


def _message(cfg, kind: str, **config) -> tuple[Message, dict]:
    initial = initial_state(cfg)
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


def test_when_client_evaluates_then_reply_is_metric_sums_and_a_count(tiny_config, task_identity):
    msg, _ = _message(tiny_config, MessageType.EVALUATE, **{records.EVAL_TARGET: "valid"})

    reply = build_client_app(tiny_config)(msg, _context())

    assert not reply.has_error(), reply.error
    assert set(reply.content.keys()) == {records.METRICS}
    metrics = reply.content[records.METRICS]
    assert set(metrics) == EVALUATE_METRICS | {"hr@10", "ndcg@10"}
    users = metrics[records.EVAL_USERS]
    assert users == len(open_local_data(tiny_config, _context()).eval_users("valid")) > 0
    assert 0.0 <= metrics["ndcg@10"] <= metrics["hr@10"] <= users  # sums: each user adds at most 1


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
    assert reply.has_error() and reply.error.reason == records.ERROR_REASONS[records.EGRESS_REFUSED]
    assert not reply.has_content()


def test_when_the_real_app_builds_a_bad_reply_then_its_guard_refuses(tiny_config, task_identity, monkeypatch):
    """The guard is wired into build_client_app: removing it from the app's mods fails this test."""
    named_after_someone = "Quinn Harlow 555-0147"
    monkeypatch.setattr(client.local_training, "train_locally", lambda msg, *a, **k: RecordDict(
        {records.ARRAYS: msg.content[records.ARRAYS], records.METRICS: MetricRecord({named_after_someone: 1.0})}))
    msg, _ = _message(tiny_config, MessageType.TRAIN)

    reply = build_client_app(tiny_config)(msg, _context())

    assert reply.has_error() and reply.error.code == records.EGRESS_REFUSED
    assert named_after_someone not in reply.error.reason and "Quinn" not in repr(reply.error)


def test_when_guard_refuses_then_the_message_names_no_refused_value(tiny_config, task_identity):
    msg, initial = _message(tiny_config, MessageType.TRAIN)
    extra = {**initial, "Quinn Harlow": torch.zeros(1)}
    for content in (RecordDict({records.ARRAYS: ArrayRecord(initial),
                                records.METRICS: MetricRecord({"Quinn Harlow 555-0147": 1.0})}),
                    RecordDict({records.ARRAYS: ArrayRecord(extra)}),
                    RecordDict({records.ARRAYS: ArrayRecord(initial), "Quinn Harlow": ConfigRecord({"a": 1})})):
        with pytest.raises(EgressError) as refused:
            check_reply(msg, Message(content=content, reply_to=msg))
        assert "Quinn" not in str(refused.value)


@pytest.mark.parametrize("dp_train", ["item-bias", "all"])
def test_when_dp_round_then_only_user_independent_numbers_leave(tiny_config, task_identity, dp_train):
    cfg = tiny_config.replace(dp="local", dp_train=dp_train, noise_multiplier=5.0, dp_local_steps=1,
                              dp_learning_rate=0.01)
    msg, initial = _message(cfg, MessageType.TRAIN)
    reply = build_client_app(cfg)(msg, _context(0))
    assert not reply.has_error(), reply.error
    assert set(reply.content[records.METRICS]) == DP_TRAIN_METRICS
    sent = reply.content[records.ARRAYS].to_torch_state_dict()
    changed = {k for k in initial if not torch.equal(sent[k], initial[k])}
    assert changed == {"item_bias.weight"} if dp_train == "item-bias" else len(changed) > 1
    # A train-loss beside DP tensors is refused, whatever handler produced it.
    leaky = Message(content=RecordDict({records.ARRAYS: ArrayRecord(sent), records.METRICS: MetricRecord(
        {records.TRAIN_LOSS: 4.2, records.UNIFORM_WEIGHT: 1})}), reply_to=msg)
    with pytest.raises(EgressError, match="outside the allow-list"):
        check_reply(msg, leaky, cfg)


def test_when_a_frozen_tensor_changes_in_an_item_bias_round_then_refused(tiny_config, task_identity):
    cfg = tiny_config.replace(dp="local")
    msg, initial = _message(cfg, MessageType.TRAIN)
    moved = {k: v.clone() for k, v in initial.items()}
    name = next(k for k in moved if "lora_B" in k)
    moved[name] += 1e-3  # LoRA was frozen this round: a change could carry anything
    reply = Message(content=RecordDict({records.ARRAYS: ArrayRecord(moved), records.METRICS: MetricRecord(
        {records.UNIFORM_WEIGHT: 1, records.EPSILON: 0.5})}), reply_to=msg)
    with pytest.raises(EgressError, match="frozen this round"):
        check_reply(msg, reply, cfg)
    check_reply(msg, reply, cfg.replace(dp_train="all"))  # training everything may change it


def _reply(msg: Message, content: RecordDict) -> Message:
    return Message(content=content, reply_to=msg)


@pytest.mark.parametrize("tamper, message", [
    (lambda a: a.__setitem__("user_vectors", ArrayRecord({"u": torch.zeros(3, 4)})["u"]), "did not send"),
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
    ({"user-42-loss": 0.3}, "outside the allow-list"),
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
    with pytest.raises(EgressError, match="outside the allow-list"):
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


def test_when_a_supernode_names_its_store_and_passphrase_file_then_it_trains_on_it(tiny_config, make_device,
                                                                                  task_identity, tmp_path):
    """The deployment branch: node config `store` + `passphrase-file` (+ the policy beside the store)."""
    node = make_device(users=15)
    store = Path(node[records.STORE])
    change_secret(store, Secret.from_key_file(node[records.KEY_FILE]), Secret.from_passphrase("a device passphrase"),
                  kdf=KdfSettings.fast())
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("a device passphrase\n")
    passphrase.chmod(0o600)
    PrivacyPolicy(require_dp=False, eval_noise_multiplier=0.0).write(policy_path(store), force=True)
    cfg = tiny_config.replace(local_steps=1)
    msg, _ = _message(cfg, MessageType.TRAIN)
    reply = build_client_app(cfg)(msg, node_context({records.STORE: str(store),
                                                     records.PASSPHRASE_FILE: str(passphrase)}))
    assert not reply.has_error(), reply.error
    assert reply.content[records.METRICS][records.NUM_EXAMPLES] == 15
