"""Red team: the curious server's attacks on a client, one test per finding of issue 11.

Each test performs the attack end to end against the real client code (the ClientApp a
SuperNode runs, on a store made by `client prepare`, with its ledger and privacy policy) and
asserts that it now fails. Each docstring says how the attack was seen to succeed on the code
before the fix (main at cb8cc5a).

The server controls the run config and every tensor and config value in its messages; it reads
every reply. It does not control the device's files (store, ledger, policy).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from client.client_app import build_client_app
from client.encryption import _PREFIX, MAGIC, KdfSettings, Secret, change_secret, make_key_file
from client.policy import PrivacyPolicy
from client.privacy_ledger import LedgerKey, ledger_path, open_locked
from client.store import LocalStore, StoreError
from common import records
from common.config import DEMO_DATA_DIR
from common.data import load_reviews
from helpers import evaluate_message, initial_state, message, node_context

STRICT = PrivacyPolicy()  # what `client prepare` writes: DP required, epsilon 8, noised evaluation


def _ask(cfg, msg: Message, node: dict) -> Message:
    """The server's request as a deployed ClientApp gets it: the run config comes from the server."""
    return build_client_app()(msg, node_context(node, run_config=cfg.to_dict()))


def _ledger(node: dict):
    store = Path(node[records.STORE])
    key = LedgerKey.of_store(LocalStore.open(store, Secret.from_key_file(node[records.KEY_FILE])).metadata.pseudonym_key)
    return store, key


def _assert_fixed_error(reply: Message, code: int) -> None:
    assert reply.has_error(), "the attack got an answer"
    assert reply.error.code == code, reply.error
    assert reply.error.reason == records.ERROR_REASONS[code]  # a fixed text, nothing from the client


# 1 --------------------------------------------------------------------------------------------------
def test_attack_1_replaying_the_dp_noise_from_the_known_seed_fails(tiny_config, make_device, task_identity):
    """Before: train_locally seeded torch's global generator from f"{seed}-{partition}-{round}" and
    Opacus drew noise and Poisson samples from it, so the server could re-run the mechanism on a
    candidate data set and match the upload exactly. Seen on cb8cc5a: two identical DP requests
    (noise multiplier 3) gave bit-identical `item_bias.weight` uploads (torch.equal True), although
    the update itself was large (norm 43)."""
    node = make_device(users=15)
    cfg = tiny_config.replace(dp="local", noise_multiplier=3.0, dp_local_steps=2)

    first = _ask(cfg, message(cfg, server_round=1), node)
    replay = _ask(cfg, message(cfg, server_round=1), node)  # same seed, node, round, data, tensors

    assert not first.has_error() and not replay.has_error()
    a = first.content[records.ARRAYS]["item_bias.weight"].numpy()
    b = replay.content[records.ARRAYS]["item_bias.weight"].numpy()
    assert not np.array_equal(a, b), "the DP noise was replayed"


def test_without_dp_the_same_seed_still_reproduces_a_round(tiny_config, make_device, task_identity):
    node = make_device(users=15, policy=PrivacyPolicy(require_dp=False, eval_noise_multiplier=0.0))
    cfg = tiny_config.replace(local_steps=2)
    first, again = (_ask(cfg, message(cfg), node) for _ in range(2))
    assert all(torch.equal(torch.from_numpy(first.content[records.ARRAYS][k].numpy()),
                           torch.from_numpy(again.content[records.ARRAYS][k].numpy()))
               for k in first.content[records.ARRAYS].keys())


# 2 --------------------------------------------------------------------------------------------------
def test_attack_2_lifting_the_budget_from_the_run_config_fails(tiny_config, make_device, task_identity):
    """Before: the budget was the run config's `target-epsilon` and `dp`. Seen on cb8cc5a: after a
    client declined ("would bring epsilon from 0.380 to 0.455, past the budget of 0.42"), the same
    server's dp='none' run was answered with tensors (nothing in the ledger), and its
    target-epsilon=1000 run was answered too, reporting epsilon 0.455."""
    policy = PrivacyPolicy(epsilon_budget=1.5, max_epsilon_per_round=1.5)
    node = make_device(users=15, policy=policy)
    cfg = tiny_config.replace(dp="local", noise_multiplier=6.0, dp_local_steps=2, target_epsilon=1.5)
    rounds = 0
    while not (reply := _ask(cfg, message(cfg, server_round=rounds + 1), node)).has_error():
        rounds += 1
        assert rounds < 50
    _assert_fixed_error(reply, records.BUDGET_EXHAUSTED)
    assert rounds >= 1

    attacks = {"dp off": (cfg.replace(dp="none"), records.POLICY_REFUSED),
               "central DP": (cfg.replace(dp="central"), records.POLICY_REFUSED),
               "bigger budget": (cfg.replace(target_epsilon=1000.0), records.POLICY_REFUSED),
               "less noise": (cfg.replace(noise_multiplier=0.3), records.BUDGET_EXHAUSTED)}
    for name, (attack, code) in attacks.items():
        _assert_fixed_error(_ask(attack, message(attack, server_round=99), node), code)
    cheap = cfg.replace(noise_multiplier=0.0, num_rounds=1)  # calibrated by the device: at most harmless
    _ask(cheap, message(cheap, server_round=100), node)
    store, key = _ledger(node)
    with open_locked(store, key) as ledger:
        assert ledger.epsilon(policy) <= 1.5 and ledger.rounds_without_dp == 0


# 3 --------------------------------------------------------------------------------------------------
def test_attack_3_reading_a_count_from_dp_train_metrics_fails(tiny_config, make_device, task_identity):
    """Before: a DP reply carried train-loss (mean, first, last), num-examples, examples-seen,
    train-seconds and delta = 1/(10 n), all un-noised; with crafted item offsets the loss counts
    the users who never reviewed an item. Seen on cb8cc5a (143 and 80 users): num-examples 143 vs 80,
    delta 0.000699 vs 0.00125, examples-seen the Poisson batch sizes. Two clients that differ in
    their users must now send the same numbers."""
    cfg = tiny_config.replace(dp="local", noise_multiplier=3.0, dp_local_steps=2)
    state = initial_state(cfg)
    state["item_bias.weight"] = torch.zeros_like(state["item_bias.weight"])
    state["item_bias.weight"][0] = 30.0  # crafted: the loss would now count users who reviewed item 0
    small, large = make_device(users=12, name="small"), make_device(users=25, name="large")

    replies = [_ask(cfg, message(cfg, state=state), node) for node in (small, large)]

    metrics = [dict(r.content[records.METRICS]) for r in replies]
    assert set(metrics[0]) == {records.UNIFORM_WEIGHT, records.EPSILON}
    assert metrics[0] == metrics[1]  # nothing in the reply depends on who the users are


# 4 --------------------------------------------------------------------------------------------------
def test_attack_4_the_one_user_evaluation_oracle_fails(tiny_config, make_device, task_identity):
    """Before: evaluate ranked the held-out items under any server tensors and replied with exact
    means, for one user, as often as asked, also after the budget was spent. Seen on cb8cc5a: one
    evaluation user gave eval-users 1, hr@10 0.0 and mrr 0.0667 (1/rank) five times identically,
    with no ledger involved; probing item by item finds the held-out item."""
    from opacus.accountants import RDPAccountant

    policy = PrivacyPolicy(epsilon_budget=2.0, max_epsilon_per_round=2.0, eval_noise_multiplier=4.0,
                           min_users_per_reply=1)
    node = make_device(users=1, policy=policy)
    cfg = tiny_config
    answers, refusals = [], []
    for probe in range(30):  # boost one item per query, claiming a new round every three queries
        state = initial_state(cfg)
        state["item_bias.weight"] = torch.zeros_like(state["item_bias.weight"])
        state["item_bias.weight"][probe] = 50.0
        reply = _ask(cfg, evaluate_message(cfg, state=state, server_round=probe // 3), node)
        (refusals if reply.has_error() else answers).append(reply)

    codes = [r.error.code for r in refusals]
    assert records.EVALUATION_LIMIT in codes  # the third query of a round
    assert codes[-1] == records.BUDGET_EXHAUSTED  # and none once the budget is spent:
    affordable = 0
    while True:  # as many noised answers as an independent accountant says epsilon 2 affords
        reference = RDPAccountant()
        reference.history = [(4.0, 1.0, affordable + 1)]
        if reference.get_epsilon(delta=policy.delta) > 2.0 * 1.0001:
            break
        affordable += 1
    charged = len(answers) + codes.count(records.TOO_FEW_USERS)  # a refusal on the noised count is charged too
    assert charged == affordable >= 2
    for reply in answers:  # every answer is noised: no exact count, no 0/1 hit
        values = dict(reply.content[records.METRICS])
        assert not float(values[records.EVAL_USERS]).is_integer()
        assert values["hr@10"] not in (0.0, 1.0)
    # What the whole budget buys: averaging every answer leaves noise of sd > 1 user on the hit.
    assert 2 * policy.eval_noise_multiplier / np.sqrt(len(answers)) > 1.0


def test_attack_4_exact_replies_are_refused_below_the_minimum_users(tiny_config, make_device, task_identity):
    """Before: no minimum; a one-user client answered exact metrics and exact training statistics."""
    node = make_device(users=1, policy=PrivacyPolicy(require_dp=False, eval_noise_multiplier=0.0))
    _assert_fixed_error(_ask(tiny_config, evaluate_message(tiny_config), node), records.TOO_FEW_USERS)
    _assert_fixed_error(_ask(tiny_config, message(tiny_config), node), records.TOO_FEW_USERS)


# 5 --------------------------------------------------------------------------------------------------
def test_attack_5_error_texts_carry_nothing_from_the_client(tiny_config, make_device, task_identity, monkeypatch):
    """Before: error replies and exceptions bypassed the egress guard. A budget refusal sent its
    text; any exception left the app and Flower's runtime made its message the error reason. Seen
    on cb8cc5a: KeyError("Bianca 555-0100") escaped the app call; the reason would be
    "<class 'KeyError'>:<''Bianca 555-0100''>"."""
    node = make_device(users=15, policy=PrivacyPolicy(require_dp=False, eval_noise_multiplier=0.0))
    cfg = tiny_config
    secret_text = "my phone is 555-0100, Bianca Roth, /home/bianca/device.prv"

    # (a) the server sends tensors of the wrong shape
    bad = initial_state(cfg)
    bad["item_bias.weight"] = torch.zeros(3)
    _assert_fixed_error(_ask(cfg, message(cfg, state=bad), node), records.BAD_REQUEST)
    # (b) a store that is not where the node config says
    gone = {**node, records.STORE: str(Path(node[records.STORE]).with_name("elsewhere.prv"))}
    _assert_fixed_error(_ask(cfg, message(cfg), gone), records.STORE_UNAVAILABLE)
    # (c) an unexpected exception whose text holds private data
    import client.local_training  # the ClientApp imports it when a train message comes

    def leaky(*args, **kwargs):
        raise KeyError(secret_text)

    monkeypatch.setattr(client.local_training, "train_locally", leaky)
    _assert_fixed_error(_ask(cfg, message(cfg), node), records.CLIENT_FAILED)
    # (d) a reply a handler built with private data in a metric name
    monkeypatch.setattr(client.local_training, "train_locally", lambda msg, *a, **k: RecordDict(
        {records.ARRAYS: msg.content[records.ARRAYS], records.METRICS: MetricRecord({secret_text: 1.0})}))
    _assert_fixed_error(_ask(cfg, message(cfg), node), records.EGRESS_REFUSED)


# 6 --------------------------------------------------------------------------------------------------
def _client_reply(value: float, size: int, *, ok: bool = True) -> Message:
    msg = Message(content=RecordDict(), dst_node_id=1, message_type="train")
    if not ok:
        from flwr.app import Error

        return Message(error=Error(code=records.CLIENT_FAILED, reason="x"), reply_to=msg)
    return Message(content=RecordDict({records.ARRAYS: ArrayRecord({"w": Array(np.full(size, value, np.float32))}),
                                       records.METRICS: MetricRecord({records.UNIFORM_WEIGHT: 1})}), reply_to=msg)


def test_attack_6_central_noise_is_not_diluted_when_clients_drop_out(tmp_path, task_identity):
    """Before: Flower's wrapper scaled the noise to the clients sampled even when fewer replied,
    while the accountant recorded the full noise multiplier; delta defaulted to 1/(10 x clients);
    nothing was carried across runs. Seen on cb8cc5a: 2 of 4 replies got noise sd 0.1252 =
    sigma C / 4 (half the intended), and the delta for 5 clients was 0.02."""
    from common.config import RunConfig
    from server.central_dp import wrap
    from server.strategy import RecommenderFedAvg

    cfg = RunConfig(dp="central", num_clients=4, min_train_clients=2, noise_multiplier=1.0,
                    update_clipping_norm=0.5, run_dir=str(tmp_path), num_rounds=3)
    strategy = RecommenderFedAvg(should_stop=lambda: False, uniform=True, min_train_nodes=2, min_available_nodes=2)
    runner, accountant = wrap(strategy, cfg)
    replies = [_client_reply(1.0, 40_000), _client_reply(3.0, 40_000), _client_reply(0, 1, ok=False),
               _client_reply(0, 1, ok=False)]

    arrays, _ = runner.aggregate_train(1, replies)

    residual = arrays["w"].numpy() - 2.0  # minus the exact mean of the two clipped models that arrived
    assert np.std(residual) == pytest.approx(1.0 * 0.5 / 2, rel=0.03)  # sigma x C / replies averaged
    assert abs(np.mean(residual)) < 0.01
    assert cfg.target_delta <= 1e-5
    # Fewer replies than the minimum: nothing is released and nothing is spent.
    assert runner.aggregate_train(2, [replies[0], *replies[2:]]) == (None, None)
    assert len(accountant.history) == 1
    # A new run in the same folder continues the same account.
    _, again = wrap(RecommenderFedAvg(should_stop=lambda: False, uniform=True), cfg)
    assert accountant.epsilon() > 0 and again.epsilon() == pytest.approx(accountant.epsilon())


# 7 --------------------------------------------------------------------------------------------------
def test_attack_7_rolling_back_or_deleting_the_ledger_fails(tiny_config, make_device, task_identity):
    """Before: the ledger had no version and no tie to its store. Seen on cb8cc5a: epsilon 1.44
    after round 1, 2.17 after round 2; with the round-1 copy put back, round 3 was answered and
    round 2's spending forgotten; with the ledger deleted, the next round started again at 1.44."""
    node = make_device(users=15)
    cfg = tiny_config.replace(dp="local", noise_multiplier=3.0, dp_local_steps=2)
    store, _ = _ledger(node)
    path = ledger_path(store)
    assert not _ask(cfg, message(cfg, server_round=1), node).has_error()
    old = path.read_bytes()
    assert not _ask(cfg, message(cfg, server_round=2), node).has_error()

    path.write_bytes(old)  # roll back to the copy after round 1
    _assert_fixed_error(_ask(cfg, message(cfg, server_round=3), node), records.LEDGER_UNAVAILABLE)
    path.unlink()  # delete it
    _assert_fixed_error(_ask(cfg, message(cfg, server_round=3), node), records.LEDGER_UNAVAILABLE)
    _assert_fixed_error(_ask(cfg, evaluate_message(cfg, server_round=3), node), records.LEDGER_UNAVAILABLE)


def test_attack_7_another_stores_ledger_does_not_open(tiny_config, make_device, task_identity):
    node, other = make_device(users=15, name="a"), make_device(users=15, name="b")
    shutil.copy(ledger_path(Path(other[records.STORE])), ledger_path(Path(node[records.STORE])))
    cfg = tiny_config.replace(dp="local", noise_multiplier=3.0, dp_local_steps=2)
    _assert_fixed_error(_ask(cfg, message(cfg), node), records.LEDGER_UNAVAILABLE)


def test_when_passphrase_changes_then_the_ledger_keeps_counting(tiny_config, make_device, task_identity,
                                                                  monkeypatch):
    """Before: change-passphrase re-encrypted the store but not the ledger: the next DP round failed,
    and deleting the ledger to get going again reset epsilon to 0."""
    node = make_device(users=15)
    cfg = tiny_config.replace(dp="local", noise_multiplier=3.0, dp_local_steps=2)
    first = _ask(cfg, message(cfg, server_round=1), node).content[records.METRICS][records.EPSILON]
    store = Path(node[records.STORE])
    change_secret(store, Secret.from_key_file(node[records.KEY_FILE]), Secret.from_passphrase("correct horse battery"),
                  kdf=KdfSettings.fast())
    monkeypatch.setenv("DEVICE_PASSPHRASE", "correct horse battery")
    by_passphrase = {records.STORE: str(store), records.PASSPHRASE_ENV: "DEVICE_PASSPHRASE"}
    second = _ask(cfg, message(cfg, server_round=2), by_passphrase)
    assert not second.has_error(), second.error
    assert second.content[records.METRICS][records.EPSILON] > first


def test_when_two_runs_share_a_store_then_no_release_is_lost(make_device):
    node = make_device(users=15)
    store, key = _ledger(node)
    policy = PrivacyPolicy(epsilon_budget=100, max_epsilon_per_round=100)

    def spend(run: int) -> None:
        for r in range(5):
            with open_locked(store, key) as ledger:
                ledger.record("train", [(2.0, 1.0, 1)], policy, run_id=run, server_round=r)

    threads = [threading.Thread(target=spend, args=(run,)) for run in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with open_locked(store, key) as ledger:
        assert len(ledger.history) == 10 and ledger.version == 11


# 8 --------------------------------------------------------------------------------------------------
def test_attack_8_a_crafted_store_header_cannot_demand_a_huge_key_derivation(tmp_path, tiny_config, task_identity,
                                                                             monkeypatch):
    """Before: a header asking for 100 Argon2id passes over 4 GiB passed the header checks (both at
    their old maxima) and reached the key derivation before the key check: seen on cb8cc5a,
    `_derive` was called with ('argon2id', (100, 4194304, 4)) (minutes and 4 GiB to run)."""
    store = tmp_path / "crafted.prv"
    header = _PREFIX.pack(MAGIC, 1, 1, 100, 4 << 20, 4, os.urandom(16), os.urandom(7), 1 << 20)
    store.write_bytes(header + os.urandom(16) + os.urandom(64))
    started = time.perf_counter()
    with pytest.raises(StoreError, match="costlier key derivation"):
        LocalStore.open(store, Secret.from_passphrase("a long passphrase"))
    monkeypatch.setenv("CRAFTED_STORE_PASSPHRASE", "a long passphrase")
    PrivacyPolicy(require_dp=False, eval_noise_multiplier=0.0).write(store.with_name(store.name + ".policy.toml"))
    node = {records.STORE: str(store), records.PASSPHRASE_ENV: "CRAFTED_STORE_PASSPHRASE"}
    _assert_fixed_error(_ask(tiny_config, message(tiny_config), node), records.STORE_UNAVAILABLE)
    assert time.perf_counter() - started < 5.0


def test_attack_8_bad_record_messages_hold_no_raw_review_values(tmp_path, caplog):
    """Before: a bad record's problem line echoed the raw, not yet anonymised value into logs and
    errors; seen on cb8cc5a: "field 'summary': must be a string or null, got ['Call Bianca Roth at
    555-0100']"."""
    pii = "Call Bianca Roth at 555-0100"
    good = json.loads((DEMO_DATA_DIR / "reviews.jsonl").read_text().splitlines()[0])
    path = tmp_path / "reviews.jsonl"
    path.write_text("\n".join([json.dumps({**good, "summary": [pii]}), json.dumps({**good, "rating": pii}),
                               "{" + pii, json.dumps({**good, "user_id": {"name": pii}}), json.dumps(good)]) + "\n")
    _, report = load_reviews(path, on_bad="skip")
    assert len(report.problems) == 4
    assert not any("Bianca" in p or "555" in p for p in report.problems)
    assert not any("Bianca" in r.getMessage() for r in caplog.records)
    assert "a text of 28 characters" in report.problems[1]


# 9 --------------------------------------------------------------------------------------------------
def test_attack_9_a_full_disk_during_prepare_prints_no_private_data(tmp_path):
    """Before: `client prepare` into a full disk (a small store, so the error came at flush) died
    with a rich traceback listing local variables. Seen on cb8cc5a: exit code 1 on "OSError: [Errno
    27] File too large" and 66 KB of traceback holding all four review texts, summaries, the user
    id, the reviewer's name and the whole 64-hex pseudonym key."""
    rows = (DEMO_DATA_DIR / "reviews.jsonl").read_text().splitlines()[:4]
    reviews = tmp_path / "reviews.jsonl"
    reviews.write_text("\n".join(rows) + "\n")
    key = tmp_path / "device.key"
    make_key_file(key)
    out = tmp_path / "device.prv"
    privrec = Path(sys.executable).with_name("privrec")

    def small_disk() -> None:  # every file this process writes stops at 1 KiB (EFBIG, like ENOSPC)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))

    done = subprocess.run([str(privrec), "client", "prepare", "--reviews", str(reviews), "--items",
                           str(DEMO_DATA_DIR / "items.jsonl"), "--out", str(out), "--key-file", str(key),
                           "--pii-model", "none"], capture_output=True, text=True, preexec_fn=small_disk,
                          timeout=300, env={**os.environ, "COLUMNS": "200"})

    printed = done.stdout + done.stderr
    assert done.returncode == 2, printed
    _assert_nothing_private(printed, rows)
    assert not out.exists() and not list(tmp_path.glob(".device.prv.*"))  # no partial store

    # change-passphrase into the same full disk: a one-line error, and the store is left as it was.
    subprocess.run([str(privrec), "client", "prepare", "--reviews", str(reviews), "--items",
                    str(DEMO_DATA_DIR / "items.jsonl"), "--out", str(out), "--key-file", str(key),
                    "--pii-model", "none"], capture_output=True, check=True, timeout=300)
    before = out.read_bytes()
    new_key = tmp_path / "new.key"
    make_key_file(new_key)
    done = subprocess.run([str(privrec), "client", "change-passphrase", str(out), "--key-file", str(key),
                           "--new-key-file", str(new_key)], capture_output=True, text=True,
                          preexec_fn=small_disk, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 2, done.stdout + done.stderr
    _assert_nothing_private(done.stdout + done.stderr, rows)
    assert out.read_bytes() == before


def _assert_nothing_private(printed: str, rows: list[str]) -> None:
    assert "cannot write" in printed and "Traceback" not in printed and "locals" not in printed
    for row in map(json.loads, rows):
        for value in (row.get("review_text"), row.get("summary"), row.get("user_id"), row.get("reviewer_name")):
            if value and len(value) > 3:
                assert value not in printed and value[:40] not in printed
