"""Distributed DP: one user-level release summed over the federation through SecAgg+.

The simulated federation runs Flower's own SecAgg+ workflow and ``secaggplus_mod``; the grid is
recorded on the server side, as a curious server would read it.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

import server.server_app
from client.policy import SIMULATED_DEVICE, PrivacyPolicy
from client.simulated_devices import apply_device_policy, prepare_simulated_devices, reset_ledgers
from common.config import ConfigError, RunConfig
from common.federation_dp import FederationAccountant, release_noise, release_plan
from server.outcome import RunFailed
from server.simulation import simulate
from helpers import RecordingGrid

POLICY = PrivacyPolicy(epsilon_budget=8.0, eval_noise_multiplier=20.0, min_users_per_reply=1)


def _config(tiny_bert, tmp_path_factory, stores_root, **changes) -> RunConfig:
    return RunConfig(model_path=str(tiny_bert), embed_dim=16, max_profile_tokens=48, max_item_tokens=16,
                     num_clients=3, num_rounds=1, patience=0, device="cpu", stores_dir=str(stores_root),
                     run_dir=str(tmp_path_factory.mktemp("distributed-runs")), dp="distributed",
                     target_epsilon=4.0, **changes)


@pytest.fixture(scope="module")
def distributed_run(tiny_bert, tmp_path_factory, stores_root):
    cfg = _config(tiny_bert, tmp_path_factory, stores_root, release_head_items=5)  # both releases
    prepare_simulated_devices(cfg, progress=False)
    reset_ledgers(cfg, reason="test: a new federation")
    grids = []
    real = server.server_app.run_federation

    def recording(grid, cfg, **kwargs):
        grids.append(RecordingGrid(grid))
        return real(grids[-1], cfg, **kwargs)

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(server.server_app, "run_federation", recording)
            path = simulate(cfg, run_name="distributed", cpus_per_client=1, progress=False, device_policy=POLICY)
        yield cfg, path, grids[0].replies
    finally:  # the shared stores go back to fresh ledgers and the simulated devices' policy
        reset_ledgers(cfg, reason="test: leave the shared stores unspent")
        apply_device_policy(cfg, SIMULATED_DEVICE)


def test_when_distributed_run_finishes_then_one_release_is_accounted(distributed_run):
    cfg, path, _ = distributed_run
    summary = json.loads((path / "summary.json").read_text())
    rows = json.loads((path / "metrics.json").read_text())
    assert [r["round"] for r in rows] == [0, 1] and rows[1]["clients"] == 3
    reference = RDPAccountant()  # an independent Opacus run on the same history
    sigma = get_noise_multiplier(target_epsilon=4.0, target_delta=cfg.target_delta, sample_rate=1.0, steps=1)
    reference.step(noise_multiplier=sigma, sample_rate=1.0)
    assert summary["federation-epsilon"] == pytest.approx(reference.get_epsilon(delta=cfg.target_delta))
    assert summary["federation-epsilon"] <= 4.0 and summary["dp"] == "distributed" and "test" in summary
    from safetensors.torch import load_file
    heads = load_file(str(path / "checkpoints" / "last" / "heads.safetensors"))
    assert heads["item_item.weight"].shape == (5, 5) and heads["item_item.weight"].abs().sum() > 0  # released
    assert len(set(heads["item_item.rows"].tolist())) == 5


def test_when_distributed_run_releases_ratings_then_both_checkpoints_predict_stars(distributed_run):
    from client.recommend import recommend
    from common.recommender import Recommender
    from common.run_data import RunData

    cfg, path, _ = distributed_run
    data = RunData.load(cfg)
    for which in ("best", "last"):  # the best round may be round 0: the ratings are attached to it too
        recommender = Recommender(cfg, data.catalogue)
        recommender.load_checkpoint(path / "checkpoints" / which)
        mean = float(recommender.model.item_rating.mean)
        train = [r.rating for reviews in data.split.train.values() for r in reviews]
        assert abs(mean - np.mean(train)) < 1.0 and recommender.model.item_rating.offsets.abs().sum() > 0
    user = data.split.users()[0]
    stars = recommender.predicted_stars(data.split.train[user])
    assert stars.shape == (len(data.catalogue),) and ((1 <= stars) & (stars <= 5)).all()
    history = path / "mine.jsonl"
    history.write_text("".join(json.dumps({"user_id": "me", "item_id": r.item_id, "rating": r.rating, "timestamp": 1,
                                           "summary": r.summary, "review_text": r.text}) + "\n"
                               for r in data.split.train[user]))
    shown = recommend(path, history=history, k=3)
    assert all(1 <= item.stars <= 5 for item in shown)


def test_when_distributed_run_then_no_client_vector_reaches_the_server(distributed_run):
    _, _, replies = distributed_run
    train = [m for m in replies if m.metadata.message_type == "train"]
    assert train, "the release sent no train messages"
    for message in train:  # SecAgg+ stages: keys, encrypted shares, masked vectors; no tensor in the clear
        assert not message.has_error()
        assert all(len(record) == 0 for record in message.content.array_records.values())


def test_when_distributed_run_then_every_device_recorded_the_federation_release(distributed_run):
    from client.simulated_devices import device_ledger

    cfg, _, _ = distributed_run
    for partition in range(cfg.num_clients):
        with device_ledger(cfg, partition) as ledger:
            releases = [e for e in ledger.events if e["kind"] == "release"]
            assert [(e["statistic"], e["entries"]) for e in releases] == [
                (statistic, [[sigma, 1.0, 1]]) for statistic, sigma in release_plan(cfg).items()]


def test_when_the_run_is_audited_then_every_epsilon_is_recomputed_and_every_name_checked(distributed_run, tmp_path):
    from common.report import write_report
    from server.audit import collect

    cfg, path, _ = distributed_run
    report = collect(path)
    assert [f for f in report["findings"] if f["severity"] == "failure"] == []
    federation = report["accounting"]["federation"]
    assert len(federation["history"]) == 2  # the counts and the head Gram
    assert federation["epsilon-recomputed"] == pytest.approx(federation["epsilon-claimed"])
    assert federation["epsilon-prv"] == pytest.approx(federation["epsilon-claimed"], rel=0.25)  # another accountant
    devices = report["accounting"]["devices"]
    assert len(devices) == cfg.num_clients
    for device in devices:
        assert sorted(map(tuple, device["run-entries"])) == sorted(map(tuple, federation["history"]))
        assert device["epsilon-recomputed"] == pytest.approx(device["epsilon-claimed"])
        assert device["epsilon-claimed"] > federation["epsilon-claimed"]  # its noised evaluations are charged too
    egress = report["egress"]  # SecAgg+ stages and evaluations left every device, nothing else
    assert egress["unknown-tensors"] == egress["unknown-metrics"] == [] and egress["tensor-names"] == []
    assert all(d["bytes-by-round"].get("1", 0) > 0 for d in egress["per-device"])
    paths = write_report(report, tmp_path / "audit")
    page = paths["html"].read_text()
    assert "All checks passed" in page and page.count("data:image/png;base64,") == 3
    assert "<script" not in page and "src='http" not in page  # self-contained, no network
    assert json.loads(paths["json"].read_text())["format"] == 1


def test_when_a_server_understates_epsilon_then_the_audit_fails_in_red_at_the_top(distributed_run, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from common.cli import app

    _, path, _ = distributed_run
    lying = tmp_path / "lying-run"
    shutil.copytree(path, lying, ignore=shutil.ignore_patterns("checkpoints"))
    summary = json.loads((lying / "summary.json").read_text())
    summary["federation-epsilon"] = 0.5  # what the server says; the history says 4
    (lying / "summary.json").write_text(json.dumps(summary))
    result = CliRunner().invoke(app, ["audit", str(lying)])
    assert result.exit_code == 1
    page = (lying / "audit" / "report.html").read_text()
    assert page.index("FAILED: 1 check(s) failed") < page.index("<h2>")
    assert "claims federation epsilon 0.5" in page


def test_when_a_device_sent_an_unlisted_metric_then_the_audit_names_it(distributed_run):
    from server.audit import collect
    from client.simulated_devices import simulated_device_reports

    cfg, path, _ = distributed_run
    summary = json.loads((path / "summary.json").read_text())
    reports = simulated_device_reports(cfg, summary["run-id"])
    reports[0]["sent"].append({"run": summary["run-id"], "round": 1, "message": "evaluate", "bytes": 8,
                               "tensors": [], "metrics": {"user-secret": 1.0}})
    report = collect(path, reports)
    assert any("user-secret" in f["text"] and f["severity"] == "failure" for f in report["findings"])


def test_when_distributed_dp_config_is_wrong_then_error_names_the_field():
    with pytest.raises(ConfigError, match="secagg-threshold"):
        RunConfig(dp="distributed", num_clients=3, secagg_threshold=4)
    with pytest.raises(ConfigError, match="dp-colluders"):
        RunConfig(dp="distributed", num_clients=3, dp_colluders=3)
    with pytest.raises(ConfigError, match="item-embeddings"):
        RunConfig(dp="distributed", item_embeddings=False)


def test_federation_accountant_matches_opacus():
    accountant = FederationAccountant(delta=1e-5)
    assert accountant.epsilon() == 0.0
    accountant.record(1.3)
    accountant.record(2.0)
    reference = RDPAccountant()
    reference.history = [(1.3, 1.0, 1), (2.0, 1.0, 1)]
    assert accountant.epsilon() == pytest.approx(reference.get_epsilon(delta=1e-5))


def test_noise_multiplier_is_calibrated_from_public_settings_only():
    cfg = RunConfig(dp="distributed", num_rounds=1, target_epsilon=2.0)
    expected = get_noise_multiplier(target_epsilon=2.0, target_delta=cfg.target_delta, sample_rate=1.0, steps=1)
    assert release_noise(cfg) == pytest.approx(expected)
    assert release_noise(cfg.replace(seed=7)) == release_noise(cfg)


def test_noise_shares_add_up_to_the_calibrated_noise():
    from client.secure_release import noise_share

    sigma, k, honest = 1.7, 5, 4
    shares = [noise_share((200_000,), sigma * math.sqrt(k / honest)) for _ in range(honest)]
    assert np.std(np.sum(shares, axis=0)) == pytest.approx(sigma * math.sqrt(k), rel=0.01)
    assert not np.array_equal(noise_share((8,), 1.0), noise_share((8,), 1.0))  # OS entropy, no replay


@pytest.fixture(scope="module")
def short_of_threshold(distributed_run, tiny_bert, tmp_path_factory, stores_root):
    """The same federation with one device past its budget: it declines at the setup stage."""
    from client.simulated_devices import device_ledger

    cfg = _config(tiny_bert, tmp_path_factory, stores_root)
    reset_ledgers(cfg, reason="test: a new federation")
    with device_ledger(cfg, 0) as ledger:
        ledger.record("train", [(0.5, 1.0, 1)], POLICY, run_id=0, server_round=1)  # spends more than 8
    try:
        with pytest.raises(RunFailed, match="fewer than the threshold of 3 clients took part"):
            simulate(cfg, run_name="short", cpus_per_client=1, progress=False, device_policy=POLICY)
        path, spent = Path(cfg.run_dir) / "short", []
        for partition in range(cfg.num_clients):
            with device_ledger(cfg, partition) as ledger:
                spent.append([e for e in ledger.events if e["kind"] == "release"])
        yield path, spent
    finally:  # the shared stores go back to fresh ledgers and the simulated devices' policy
        reset_ledgers(cfg, reason="test: leave the shared stores unspent")
        apply_device_policy(cfg, SIMULATED_DEVICE)


def test_when_fewer_clients_than_threshold_then_release_aborts_and_spends_nothing(short_of_threshold):
    path, spent = short_of_threshold
    rows = json.loads((path / "metrics.json").read_text())
    summary = json.loads((path / "summary.json").read_text())
    assert rows[1]["clients"] == 0 and rows[1]["federation-epsilon"] == 0.0
    assert summary["federation-epsilon"] == 0.0 and summary["best-round"] == 0  # the zero-shot model
    assert "secure release of item-counts did not complete" in summary["failed"] and summary["test"] is None
    assert spent == [[], [], []]  # the protocol stopped before any device sent its masked counts


@pytest.fixture()
def in_process_release(make_device, task_identity, monkeypatch, tmp_path, request):
    """Flower's SecAgg+ workflow against three real devices' ClientApps in this process, with
    each device's statistic and noise share recorded where only the device could see them."""
    import client.secure_release as device_side
    from client.client_app import build_client_app
    from helpers import InProcessGrid, node_context
    from server.secure_release import ReleaseStrategy

    cfg = RunConfig(dp="distributed", num_rounds=1, num_clients=3, target_epsilon=4.0, device="cpu",
                    run_dir=str(tmp_path / "runs"), **getattr(request, "param", {}))
    policy = PrivacyPolicy(min_users_per_reply=1)
    nodes = {n: make_device(users=8 + 4 * n, policy=policy, name=f"d{n}") for n in (11, 12, 13)}
    sent = []

    def recording_share(shape, std):
        share = real_share(shape, std)
        sent.append({"std": std, "noise": share})
        return share

    def recording_counts(data, recent, ratings=False, width=0):
        counts = real_counts(data, recent, ratings, width)
        sent.append({"counts": counts})
        return counts

    def recording_gram(data, head, recent):
        gram = real_gram(data, head, recent)
        sent.append({"counts": gram})
        return gram

    real_share, real_counts, real_gram = device_side.noise_share, device_side.item_counts, device_side.head_gram
    monkeypatch.setattr(device_side, "noise_share", recording_share)
    monkeypatch.setattr(device_side, "item_counts", recording_counts)
    monkeypatch.setattr(device_side, "head_gram", recording_gram)
    strategies = []
    real_aggregate = ReleaseStrategy.aggregate_fit

    def instrumented(self, server_round, results, failures):
        strategies.append(self)
        return real_aggregate(self, server_round, results, failures)

    monkeypatch.setattr(ReleaseStrategy, "aggregate_fit", instrumented)
    grid = InProcessGrid(build_client_app(cfg), nodes)
    return cfg, grid, node_context({}), sent, strategies


def test_when_release_then_server_sum_is_the_devices_noised_counts_and_nothing_else(in_process_release):
    from server.secure_release import CLIPPING_RANGE, secure_release

    cfg, grid, context, sent, strategies = in_process_release
    accountant = FederationAccountant(cfg.target_delta)
    release = secure_release(grid, context, cfg, accountant)
    counts = [s["counts"] for s in sent if "counts" in s]
    noise = [s["noise"] for s in sent if "noise" in s]
    assert len(counts) == len(noise) == 3 and release.contributors == 3
    step = 2 * CLIPPING_RANGE / 2**22  # SecAgg+'s quantisation step
    assert np.abs(release.total - (np.sum(counts, axis=0) + np.sum(noise, axis=0))).max() < 3 * step
    # Each share: sigma x sqrt(2k) / sqrt(threshold) (a count and a rating value per item), the
    # threshold being every client here.
    sigma = release_noise(cfg)
    assert [s["std"] for s in sent if "std" in s] == [pytest.approx(sigma * math.sqrt(2 * cfg.release_recent_items / 3))] * 3
    assert accountant.epsilon() == pytest.approx(3.99, abs=0.01)
    # The strategy saw the aggregate only: three identical copies, none a device's own vector.
    (strategy,) = strategies
    copies = [arrays[0] for arrays in strategy.seen]
    assert all(np.array_equal(c, copies[0]) for c in copies)
    for own in (c + n for c, n in zip(counts, noise)):
        assert np.abs(copies[0] - own).max() > 1.0
    for reply in grid.replies:  # what reached the server: protocol records, no tensor in the clear
        assert not reply.has_error()
        assert all(len(record) == 0 for record in reply.content.array_records.values())


@pytest.mark.parametrize("in_process_release", [{"release_width": 30}], indirect=True)
def test_when_the_catalogue_is_wider_than_the_release_then_devices_send_a_fixed_size_sketch(in_process_release):
    """200 demo items, width 30: each half of the vector is a 3-row count sketch of 30 entries, each
    noise share scaled by sqrt(3) for the rows an item touches, and the server reads items back."""
    from common.run_data import load_catalogue
    from common.sketch import ReleaseLayout
    from server.secure_release import CLIPPING_RANGE, secure_release

    cfg, grid, context, sent, _ = in_process_release
    release = secure_release(grid, context, cfg, FederationAccountant(cfg.target_delta))
    counts = [s["counts"] for s in sent if "counts" in s]
    noise = [s["noise"] for s in sent if "noise" in s]
    assert release.total.shape == (60,) and all(c.shape == (60,) for c in counts)
    assert np.abs(release.total - (np.sum(counts, axis=0) + np.sum(noise, axis=0))).max() < 3 * 2 * CLIPPING_RANGE / 2**22
    sigma = release_noise(cfg)
    assert [s["std"] for s in sent if "std" in s] == [pytest.approx(sigma * math.sqrt(2 * cfg.release_recent_items))] * 3
    layout = ReleaseLayout(load_catalogue(cfg).ids, 30)
    assert layout.sketched and layout.decode(release.total[:30]).shape == (200,)


def test_when_server_starts_secure_aggregation_in_a_local_dp_run_then_fixed_code_only(make_device, task_identity):
    """A curious server sends a SecAgg+ stage to a run that did not agree to distributed DP."""
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

    from client.client_app import build_client_app
    from common import records
    from helpers import node_context

    cfg = RunConfig(dp="local", device="cpu")
    node = make_device(users=12, policy=PrivacyPolicy(min_users_per_reply=1))
    msg = Message(content=RecordDict({RECORD_KEY_CONFIGS: ConfigRecord({Key.STAGE: Stage.SETUP})}),
                  dst_node_id=1, message_type=MessageType.TRAIN)
    reply = build_client_app(cfg)(msg, node_context(node))
    assert reply.has_error() and reply.error.code == records.BAD_REQUEST
    assert reply.error.reason == records.ERROR_REASONS[records.BAD_REQUEST]


@pytest.mark.parametrize("tamper", ["tensor", "weight", "metrics", "extra-record"])
def test_egress_refuses_a_secure_aggregation_reply_carrying_anything_else(tamper, task_identity):
    from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
    from flwr.compat.common.recorddict_compat import fitres_to_recorddict

    from client.egress import EgressError, check_reply

    cfg = RunConfig(dp="distributed", num_rounds=1)
    request = Message(content=RecordDict({RECORD_KEY_CONFIGS: ConfigRecord({Key.STAGE: Stage.COLLECT_MASKED_VECTORS})}),
                      dst_node_id=1, message_type=MessageType.TRAIN)
    content = fitres_to_recorddict(FitRes(status=Status(code=Code.OK, message=""), num_examples=1, metrics={},
                                          parameters=ndarrays_to_parameters([])), keep_input=False)
    content["fitres.parameters"].clear()  # what secaggplus_mod leaves after masking
    content[RECORD_KEY_CONFIGS] = ConfigRecord({"masked": [1, 2, 3]})
    check_reply(request, Message(content=content, reply_to=request), cfg)  # the protocol's own reply passes
    if tamper == "tensor":
        content["fitres.parameters"] = ArrayRecord([np.ones(3)])
    elif tamper == "weight":
        content["fitres.num_examples"] = MetricRecord({"num_examples": 143})  # a user count
    elif tamper == "metrics":
        content["fitres.metrics"] = ConfigRecord({"loss": 0.3})
    else:
        content["metrics"] = MetricRecord({"train-loss": 0.3})
    with pytest.raises(EgressError):
        check_reply(request, Message(content=content, reply_to=request), cfg)
    with pytest.raises(EgressError):  # and no SecAgg+ reply at all outside distributed DP
        check_reply(request, Message(content=content, reply_to=request), cfg.replace(dp="local"))


def test_when_server_sends_a_plain_train_message_under_distributed_dp_then_refused(make_device, task_identity):
    """A curious server skips SecAgg+ and asks a strict device for plain training under distributed
    DP: the device would answer with un-noised tensors and statistics; it refuses."""
    from client.client_app import build_client_app
    from common import records
    from helpers import message, node_context

    cfg = RunConfig(dp="distributed", device="cpu")
    node = make_device(users=12)  # the strict default policy: DP required
    reply = build_client_app(cfg)(message(cfg), node_context(node))
    assert reply.has_error() and reply.error.code == records.BAD_REQUEST


@pytest.mark.parametrize("in_process_release", [{"release_head_items": 6, "release_split": 0.4}], indirect=True)
def test_when_head_gram_is_released_then_the_sum_is_the_devices_and_epsilon_composes(in_process_release):
    from common import records
    from server.secure_release import CLIPPING_RANGE, ease, head_items, secure_release

    cfg, grid, context, sent, strategies = in_process_release
    accountant = FederationAccountant(cfg.target_delta)
    counts = secure_release(grid, context, cfg, accountant)
    head = head_items(counts.total[:len(counts.total) // 2], 6)  # the counts; the rating sums follow them
    sent.clear()
    gram = secure_release(grid, context, cfg, accountant, records.RELEASE_HEAD_GRAM,
                          {records.RELEASE_HEAD: ",".join(map(str, head))})
    devices = [x["counts"] for x in sent if "counts" in x]
    noise = [x["noise"] for x in sent if "noise" in x]
    assert len(devices) == 3 and devices[0].shape == (21,)  # 6 x 7 / 2 entries of the upper triangle
    assert np.abs(gram.total - (np.sum(devices, axis=0) + np.sum(noise, axis=0))).max() < 3 * 2 * CLIPPING_RANGE / 2**22
    # Each user adds at most k (k + 1) / 2 ones; the two releases compose to the run's target.
    sigma = get_noise_multiplier(target_epsilon=4.0, target_delta=cfg.target_delta, sample_rate=1.0, steps=1)
    k = cfg.release_head_recent
    assert [x["std"] for x in sent if "std" in x] == [pytest.approx(sigma / math.sqrt(0.6) * math.sqrt(k * (k + 1) / 2 / 3))] * 3
    single = RDPAccountant()  # one release at sigma: the split composes to exactly its epsilon
    single.step(noise_multiplier=sigma, sample_rate=1.0)
    assert accountant.epsilon() == pytest.approx(single.get_epsilon(delta=cfg.target_delta))
    weights = ease(gram.total, 6, cfg.ease_lambda)
    assert weights.shape == (6, 6) and np.all(np.diag(weights) == 0)


def test_when_server_asks_for_the_same_release_twice_then_devices_refuse_and_nothing_more_is_spent(in_process_release):
    from server.secure_release import ReleaseError, secure_release

    cfg, grid, context, sent, _ = in_process_release
    accountant = FederationAccountant(cfg.target_delta)
    secure_release(grid, context, cfg, accountant)
    spent = accountant.epsilon()
    with pytest.raises(ReleaseError, match="nothing was released"):
        secure_release(grid, context, cfg, accountant)  # a second look at the same counts
    assert accountant.epsilon() == spent and len([x for x in sent if "noise" in x]) == 3


def test_ease_matches_its_closed_form():
    from server.secure_release import ease

    rng = np.random.default_rng(0)
    x = (rng.random((40, 5)) < 0.3).astype(float)
    gram = x.T @ x
    weights = ease(gram[np.triu_indices(5)], 5, 2.0)
    inverse = np.linalg.inv(gram + 2.0 * np.eye(5))
    expected = np.eye(5) - inverse / np.diag(inverse)
    assert np.allclose(weights, expected)


def test_item_item_scores_are_added_on_the_device(tiny_config):
    """A released link from item a to item b raises b for users who reviewed a, on the device."""
    from common.recommender import Recommender
    from common.run_data import RunData

    cfg = tiny_config.replace(dp="distributed", release_head_items=2, ease_weight=1.0)
    data = RunData.load(cfg)
    recommender = Recommender(cfg, data.catalogue)
    users = sorted(data.split.train)[:20]
    a = data.catalogue.index[data.split.train[users[0]][0].item_id]
    b = next(i for i in range(len(data.catalogue)) if i != a)
    before = recommender.scores(users, data.split)
    state = recommender.state()
    state["item_item.rows"] = torch.tensor([a, b], dtype=torch.float32)
    state["item_item.weight"] = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    recommender.load_state(state)
    after = recommender.scores(users, data.split)
    reviewed_a = np.array([any(data.catalogue.index[r.item_id] == a for r in data.split.train[u]) for u in users])
    lift = after[:, b] - before[:, b]
    assert reviewed_a[0] and np.all(lift[reviewed_a] > 0) and np.allclose(lift[~reviewed_a], lift[~reviewed_a].min())
    assert np.allclose(np.delete(after, b, axis=1), np.delete(before, b, axis=1))


@pytest.mark.parametrize("in_process_release", [{"secagg_threshold": 2}], indirect=True)
def test_when_a_device_drops_before_sending_its_keys_then_the_others_still_release(in_process_release):
    """A node gone before SecAgg+'s setup reply (as a SuperNode killed mid-round is): Flower's
    workflow alone loses the round; ours releases the two others' sum."""
    from flwr.app import Error, Message

    from server.secure_release import CLIPPING_RANGE, secure_release

    cfg, grid, context, sent, _ = in_process_release
    deliver = grid.send_and_receive

    def node_13_is_gone(messages, *, timeout=None):
        alive = [m for m in messages if m.metadata.dst_node_id != 13]
        gone = [Message(Error(code=0, reason="node unavailable"), reply_to=m) for m in messages
                if m.metadata.dst_node_id == 13]
        return list(deliver(alive, timeout=timeout)) + gone

    grid.send_and_receive = node_13_is_gone
    release = secure_release(grid, context, cfg, FederationAccountant(cfg.target_delta))
    counts = [s["counts"] for s in sent if "counts" in s]
    noise = [s["noise"] for s in sent if "noise" in s]
    assert release.contributors == 2 and len(counts) == len(noise) == 2
    step = 2 * CLIPPING_RANGE / 2**22
    assert np.abs(release.total - (np.sum(counts, axis=0) + np.sum(noise, axis=0))).max() < 3 * step
