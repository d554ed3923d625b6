"""A run killed after round 2 and resumed ends as an uninterrupted one: the same final model and
metrics with the same seed (DP off), the same ledger totals on every device (DP on). The real
ServerApp story and ClientApps over an in-process Grid; the 'kill' stops the server in the middle of
round 3, after it sent the round's work."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from flwr.app import MessageType
from helpers import InProcessGrid
from safetensors.torch import load_file

from client.client_app import build_client_app
from client.policy import SIMULATED_DEVICE
from client.simulated_devices import apply_device_policy, device_ledger, prepare_simulated_devices, reset_ledgers
from common import records
from common.config import RunConfig
from server.checkpoints import RunDirectory
from server.resume import ResumeError, resumable
from server.server_app import run_federation

CLIENTS = 4
RUN_IDS = itertools.count(101)  # the devices' ledgers remember every run id they answered


class Killed(BaseException):
    """The server process dies (not an error any code of ours would catch)."""


class KilledInRound(InProcessGrid):
    """Answers like the in-process grid until the server sends round ``round``'s training: then
    ``delivered`` devices get their message (and train) and the server dies."""

    def __init__(self, *args, round: int, delivered: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.round, self.delivered = round, delivered

    def push_messages(self, messages):
        messages = list(messages)
        if any(_training_round(m) == self.round for m in messages):
            super().push_messages(messages[: self.delivered])
            raise Killed
        return super().push_messages(messages)


def _training_round(message) -> int | None:
    if message.metadata.message_type != MessageType.TRAIN:
        return None
    return int(message.content.config_records[records.CONFIG][records.SERVER_ROUND])


@pytest.fixture()
def federation(tiny_bert, tmp_path, stores_root, task_identity, monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # threaded CPU reductions vary in their last bits; one thread repeats exactly

    def run(dp: str, name: str, *, kill_in_round: int = 0, delivered: int = 0, resume: bool = False) -> RunDirectory:
        cfg = _config(dp, tiny_bert, stores_root, tmp_path)
        monkeypatch.setattr(TaskIdentity, "_run_id", next(RUN_IDS))  # each start is a new Flower run
        nodes = {n + 1: {records.PARTITION_ID: n, records.NUM_PARTITIONS: CLIENTS} for n in range(CLIENTS)}
        prepare_simulated_devices(cfg, progress=False)
        apply_device_policy(cfg, SIMULATED_DEVICE)
        app = build_client_app(cfg)
        grid = InProcessGrid(app, nodes)
        if kill_in_round:
            grid = KilledInRound(app, nodes, round=kill_in_round, delivered=delivered)
        return run_federation(grid, cfg, run_name=name, resume=resume)

    yield run
    torch.set_num_threads(threads)
    reset_ledgers(_config("local", tiny_bert, stores_root, tmp_path), reason="test: leave the shared stores unspent")


def _config(dp: str, tiny_bert, stores_root, tmp_path) -> RunConfig:
    return RunConfig(dp=dp, model_path=str(tiny_bert), embed_dim=16, max_profile_tokens=48, max_item_tokens=16,
                     num_clients=CLIENTS, num_rounds=3, local_steps=2, patience=0, min_train_clients=2,
                     fraction_train=0.75, max_eval_users=80, target_epsilon=4.0, run_dir=str(tmp_path / dp),
                     device="cpu", stores_dir=str(stores_root), seed=7)


def _spent(cfg: RunConfig) -> list[float]:
    """The epsilon each device's ledger says it spent."""
    totals = []
    for partition in range(CLIENTS):
        with device_ledger(cfg, partition) as ledger:
            totals.append(round(ledger.epsilon(SIMULATED_DEVICE), 9))
    return totals


def _tensors(run: RunDirectory, which: str) -> dict[str, torch.Tensor]:
    folder = run.checkpoint(which)
    assert folder is not None
    return {**load_file(str(folder / "adapter_model.safetensors")), **load_file(str(folder / "heads.safetensors"))}


def test_when_a_run_killed_in_round_3_is_resumed_then_it_ends_as_the_uninterrupted_run(federation):
    whole = federation("none", "whole")
    with pytest.raises(Killed):
        federation("none", "cut", kill_in_round=3, delivered=1)  # one device had trained round 3
    cut = RunDirectory(whole.path.parent / "cut")
    assert not (cut.path / "summary.json").exists() and [r["round"] for r in cut.metrics()] == [0, 1, 2]
    resumed = federation("none", "cut", resume=True)

    rows, again = whole.metrics(), resumed.metrics()
    assert [r["round"] for r in again] == [0, 1, 2, 3] == [r["round"] for r in rows]
    for a, b in zip(rows, again, strict=True):
        assert a.get("clients") == b.get("clients")
        assert b["valid-ndcg@10"] == pytest.approx(a["valid-ndcg@10"], abs=1e-6)
    for which in ("last", "best"):
        expected, got = _tensors(whole, which), _tensors(resumed, which)
        assert expected.keys() == got.keys()
        worst = max(float((expected[k] - got[k]).abs().max()) for k in expected)
        assert worst < 1e-6, f"{which}: tensors differ by up to {worst:.2e}"  # 0.0 when measured
    summary = json.loads((resumed.path / "summary.json").read_text())
    reference = json.loads((whole.path / "summary.json").read_text())
    assert summary["resumed-after-round"] == 2 and summary["best-round"] == reference["best-round"]
    assert summary["test"]["ndcg@10"] == pytest.approx(reference["test"]["ndcg@10"], abs=1e-6)
    with pytest.raises(ResumeError, match="finished"):
        resumable(resumed)


def test_when_a_dp_run_killed_after_round_2_is_resumed_then_every_device_spent_what_the_uninterrupted_run_did(
    federation, tiny_bert, stores_root, tmp_path
):
    cfg = _config("local", tiny_bert, stores_root, tmp_path)
    reset_ledgers(cfg, reason="test")
    federation("local", "whole")
    uninterrupted = _spent(cfg)
    reset_ledgers(cfg, reason="test")
    with pytest.raises(Killed):
        federation("local", "cut", kill_in_round=3)
    assert sum(_spent(cfg)) < sum(uninterrupted)
    federation("local", "cut", resume=True)
    assert _spent(cfg) == uninterrupted and sum(uninterrupted) > 0


class ScoresInTurn:
    """A metric source that gives each validation the next score of a list."""

    def __init__(self, *scores: float) -> None:
        self.scores = list(scores)

    def metrics(self, arrays, target, server_round):
        return {"ndcg@10": self.scores.pop(0)}


def test_when_the_kill_comes_between_the_last_and_best_checkpoints_then_resume_repairs_best(tiny_config,
                                                                                          monkeypatch):
    from flwr.app import ArrayRecord

    from common.recommender import Recommender
    from common.run_data import load_catalogue
    from server.evaluation import RoundEvaluator
    from server.resume import ResumePoint

    run = RunDirectory.create(tiny_config, "cut")
    recommender = Recommender(tiny_config, load_catalogue(tiny_config))
    evaluator = RoundEvaluator(tiny_config, recommender, ScoresInTurn(0.1, 0.3), run)
    state = recommender.state()
    evaluator.evaluate(0, ArrayRecord(state))
    evaluator.commit()
    trained = {name: tensor + 0.5 for name, tensor in state.items()}  # round 1 gains
    evaluator.evaluate(1, ArrayRecord(trained))
    real_save = run.save

    def dies_before_best(which, model, *, meta):
        if which == "best":
            raise Killed
        return real_save(which, model, meta=meta)

    monkeypatch.setattr(run, "save", dies_before_best)
    with pytest.raises(Killed):
        evaluator.commit()
    run.close()
    assert run.checkpoint_meta("best")["round"] == 0 and run.checkpoint_meta("last")["round"] == 1
    point = ResumePoint.load(RunDirectory(run.path), Recommender(tiny_config, load_catalogue(tiny_config)))
    assert point.round == 1 and point.early_stopping["best-round"] == 1
    assert run.checkpoint_meta("best")["round"] == 1  # repaired from `last`
    best = point.best_arrays.to_torch_state_dict()
    assert all(torch.allclose(best[name], trained[name]) for name in trained)
