"""The transparency log: every reply that leaves a device is on record, exactly as sent, with its cost."""

import json
from pathlib import Path

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from typer.testing import CliRunner

from client.client_app import build_client_app
from client.encryption import Secret
from client.policy import PrivacyPolicy
from client.privacy_ledger import LedgerError, LedgerKey, PrivacyLedger
from client.store import LocalStore
from common import records
from common.cli import app
from helpers import initial_state, node_context


def _message(cfg, kind: str, **config) -> Message:
    content = RecordDict({records.ARRAYS: ArrayRecord(initial_state(cfg)),
                          records.CONFIG: ConfigRecord({records.SERVER_ROUND: 3, **config})})
    return Message(content=content, dst_node_id=1, message_type=kind)


def _ledger(node: dict) -> PrivacyLedger:
    store = Path(node[records.STORE])
    metadata = LocalStore.open(store, Secret.from_key_file(node[records.KEY_FILE])).metadata
    return PrivacyLedger.open(store, LedgerKey.of_store(metadata.pseudonym_key))


@pytest.fixture()
def device(make_device):
    """A device whose policy allows plain training and exact evaluation (so replies are full)."""
    return make_device(users=15, policy=PrivacyPolicy(require_dp=False, eval_noise_multiplier=0.0,
                                                       min_users_per_reply=1))


def test_when_a_train_reply_leaves_then_its_tensors_metrics_and_bytes_are_on_record(tiny_config, device,
                                                                                     task_identity):
    cfg = tiny_config.replace(local_steps=1)
    reply = build_client_app(cfg)(_message(cfg, MessageType.TRAIN), node_context(device))
    assert not reply.has_error(), reply.error
    (entry,) = _ledger(device).sent
    sent = reply.content[records.ARRAYS]
    assert entry["message"] == MessageType.TRAIN and entry["round"] == 3 and entry["run"] == 1
    assert [(n, tuple(s), d) for n, s, d, _ in entry["tensors"]] == [
        (name, tuple(a.shape), str(a.dtype)) for name, a in sent.items()]
    assert sum(b for *_, b in entry["tensors"]) == records.array_bytes(sent)
    assert entry["bytes"] == records.payload_bytes(reply.content)
    assert entry["metrics"] == dict(reply.content[records.METRICS])
    assert entry["epsilon-charged"] == 0.0


def test_when_a_noised_evaluation_leaves_then_the_epsilon_it_charged_is_on_record(tiny_config, make_device,
                                                                                  task_identity):
    # The strict default: noised x5. 30 users keep the noised count above the minimum of 1 (z < -5.8).
    node = make_device(users=30, policy=PrivacyPolicy(min_users_per_reply=1))
    reply = build_client_app(tiny_config)(_message(tiny_config, MessageType.EVALUATE,
                                                   **{records.EVAL_TARGET: "valid"}), node_context(node))
    assert not reply.has_error(), reply.error
    ledger = _ledger(node)
    (entry,) = ledger.sent
    spent = ledger.epsilon(PrivacyPolicy())
    assert spent > 0 and entry["epsilon-charged"] == pytest.approx(spent) and entry["epsilon-total"] == pytest.approx(spent)
    assert entry["metrics"] == dict(reply.content[records.METRICS]) and entry["tensors"] == []


def test_when_a_request_is_refused_then_the_error_code_is_on_record_and_nothing_else(tiny_config, device,
                                                                                     task_identity):
    msg = _message(tiny_config, MessageType.EVALUATE, **{records.EVAL_TARGET: "everything"})
    reply = build_client_app(tiny_config)(msg, node_context(device))
    assert reply.has_error() and reply.error.code == records.BAD_REQUEST
    (entry,) = _ledger(device).sent
    assert entry["error"] == records.BAD_REQUEST and "tensors" not in entry and "metrics" not in entry


def test_when_the_log_cannot_be_written_then_the_reply_is_withheld(tiny_config, device, task_identity,
                                                                   monkeypatch):
    def broken(self, entry):
        raise LedgerError("disk full")

    monkeypatch.setattr(PrivacyLedger, "record_sent", broken)
    cfg = tiny_config.replace(local_steps=1)
    reply = build_client_app(cfg)(_message(cfg, MessageType.TRAIN), node_context(device))
    assert reply.has_error() and reply.error.code == records.LEDGER_UNAVAILABLE
    assert not reply.has_content()


def test_when_the_budget_is_reset_then_the_transparency_log_is_kept(tiny_config, device, task_identity):
    cfg = tiny_config.replace(local_steps=1)
    build_client_app(cfg)(_message(cfg, MessageType.TRAIN), node_context(device))
    ledger = _ledger(device)
    ledger.reset(reason="test")
    assert len(_ledger(device).sent) == 1


def test_audit_shows_the_owner_what_left_and_refuses_a_wrong_key(tiny_config, device, task_identity, tmp_path):
    cfg = tiny_config.replace(local_steps=1)
    build_client_app(cfg)(_message(cfg, MessageType.TRAIN), node_context(device))
    runner = CliRunner()
    store, key = device[records.STORE], device[records.KEY_FILE]
    result = runner.invoke(app, ["client", "audit", store, "--key-file", key, "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["sent"] == _ledger(device).sent and shown["sent"][0]["bytes"] > 0
    assert shown["ledger"]["epsilon-spent"] == 0.0 and shown["data-handling"]["users"] == 15
    assert "pseudonym" not in result.output and "reviewer" not in result.output  # counts, never ids or text
    table = runner.invoke(app, ["client", "audit", store, "--key-file", key])
    assert table.exit_code == 0 and "1 replies" in table.output and "what left this device" in table.output
    other = tmp_path / "other.key"
    from client.encryption import make_key_file

    make_key_file(other)
    wrong = runner.invoke(app, ["client", "audit", store, "--key-file", str(other)])
    assert wrong.exit_code == 2 and "wrong passphrase or key" in wrong.output and "Traceback" not in wrong.output


def test_when_a_ledger_predates_the_transparency_log_then_audit_says_so_in_one_line(tiny_config, device,
                                                                                   task_identity):
    from client.encryption import read_encrypted, write_encrypted

    ledger = _ledger(device)
    payload = json.loads(read_encrypted(ledger.path, ledger.key.secret))
    del payload["sent"]  # what a ledger written before the log looks like
    write_encrypted(ledger.path, json.dumps(payload).encode(), ledger.key.secret, force=True)
    result = CliRunner().invoke(app, ["client", "audit", device[records.STORE], "--key-file", device[records.KEY_FILE]])
    assert result.exit_code == 2 and "no transparency log" in " ".join(result.output.split())
    assert "Traceback" not in result.output
