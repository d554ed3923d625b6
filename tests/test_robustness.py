"""A federation with flaky devices keeps going: 3 of 10 clients fail in every round (two crash while
training, one never answers) and the run still completes with the others, in this process
(the real ServerApp story and ClientApps over an in-process Grid)."""

from __future__ import annotations

import json

import pytest

import client.local_training
from client.client_app import build_client_app
from client.policy import SIMULATED_DEVICE
from client.simulated_devices import apply_device_policy, prepare_simulated_devices, reset_ledgers
from common import records
from common.config import RunConfig
from helpers import InProcessGrid
from server.server_app import run_federation

CRASHING, SILENT = {2, 5}, 8  # partitions


@pytest.fixture()
def flaky_run(tiny_bert, tmp_path, stores_root, task_identity, monkeypatch):
    cfg = RunConfig(dp="none", model_path=str(tiny_bert), embed_dim=16, max_profile_tokens=48, max_item_tokens=16,
                    num_clients=10, num_rounds=2, local_steps=2, patience=0, min_train_clients=5, round_timeout=2.0,
                    max_eval_users=200, run_dir=str(tmp_path / "runs"), device="cpu", stores_dir=str(stores_root))
    real_train = client.local_training.train_locally

    def crashing(msg, data, cfg, *, client_seed=0, **kwargs):
        if client_seed in CRASHING:
            raise RuntimeError("the device lost power mid-round")
        return real_train(msg, data, cfg, client_seed=client_seed, **kwargs)

    monkeypatch.setattr(client.local_training, "train_locally", crashing)
    app = build_client_app(cfg)

    def device(msg, context):
        if context.node_config[records.PARTITION_ID] == SILENT:
            return None  # never answers: the server stops waiting after round-timeout
        return app(msg, context)

    nodes = {n + 1: {records.PARTITION_ID: n, records.NUM_PARTITIONS: 10} for n in range(10)}
    prepare_simulated_devices(cfg, progress=False)
    apply_device_policy(cfg, SIMULATED_DEVICE)
    try:
        run = run_federation(InProcessGrid(device, nodes), cfg, run_name="flaky")
    finally:
        reset_ledgers(cfg, reason="test: leave the shared stores unspent")
    return cfg, run.path


def test_when_30_percent_of_clients_fail_mid_round_then_the_run_completes_with_the_rest(flaky_run):
    _, path = flaky_run
    rows = [r for r in json.loads((path / "metrics.json").read_text()) if r["round"] >= 1]
    assert [r["clients"] for r in rows] == [7, 7] and all(r["failed"] == 2 for r in rows)
    assert all(r["valid-clients"] == 9 and r["valid-clients-failed"] == 1 for r in rows)  # the silent one
    summary = json.loads((path / "summary.json").read_text())
    assert summary["rounds-trained"] == 2 and "failed" not in summary and summary["test"]["clients"] == 9
