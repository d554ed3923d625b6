"""A short DP federation: clients spend their budget, decline, and the run still finishes;
a second run on the same stores starts from what the first one spent (every client declines, so
it fails with the reason instead of reporting the untrained model)."""

import json
from pathlib import Path

import pytest

from client.policy import SIMULATED_DEVICE, PrivacyPolicy
from client.simulated_devices import apply_device_policy, prepare_simulated_devices, reset_ledgers
from common.config import RunConfig
from server.outcome import RunFailed
from server.simulation import simulate

# Strict devices (DP required, noised evaluation) with a small budget: three DP rounds do not fit.
POLICY = PrivacyPolicy(epsilon_budget=2.5, max_epsilon_per_round=2.5, eval_noise_multiplier=20.0,
                       min_users_per_reply=1)


@pytest.fixture(scope="module")
def dp_runs(tiny_bert, tmp_path_factory, stores_root):
    cfg = RunConfig(model_path=str(tiny_bert), embed_dim=16, max_profile_tokens=48, max_item_tokens=16,
                    num_clients=3, num_rounds=3, patience=0, device="cpu",
                    run_dir=str(tmp_path_factory.mktemp("dp-runs")), stores_dir=str(stores_root),
                    dp="local", noise_multiplier=4.0, target_epsilon=2.5, dp_local_steps=2)
    prepare_simulated_devices(cfg, progress=False)
    reset_ledgers(cfg, reason="test: a new federation")
    try:
        first = simulate(cfg, run_name="dp-1", cpus_per_client=1, progress=False, device_policy=POLICY)
        with pytest.raises(RunFailed, match=r"no round was trained .* declined 3 time.*--reset-budgets"):
            simulate(cfg.replace(num_rounds=1), run_name="dp-2", cpus_per_client=1, progress=False,
                     device_policy=POLICY)
        yield cfg, first, Path(cfg.run_dir) / "dp-2"
    finally:  # the shared stores go back to fresh ledgers and the simulated devices' policy
        reset_ledgers(cfg, reason="test: leave the shared stores unspent")
        apply_device_policy(cfg, SIMULATED_DEVICE)


def _rows(path):
    return [r for r in json.loads((path / "metrics.json").read_text()) if "clients" in r]


def test_when_budget_reached_then_clients_decline_and_run_finishes(dp_runs):
    cfg, first, _ = dp_runs
    rows = _rows(first)
    assert [r["clients"] for r in rows] == [3, 3, 0] and rows[-1]["declined"] == 3
    assert 0 < rows[0]["epsilon-max"] < rows[1]["epsilon-max"] <= POLICY.epsilon_budget
    assert "train-loss" not in rows[0] and "examples-seen" not in rows[0]  # nothing un-noised left a client
    summary = json.loads((first / "summary.json").read_text())
    assert summary["rounds-trained"] == 2 and summary["clients-declined"] == 3 and "test" in summary


def test_when_a_new_run_starts_then_the_ledger_remembers(dp_runs):
    _, _, second = dp_runs
    rows = _rows(second)
    assert rows[0]["clients"] == 0 and rows[0]["declined"] == 3  # nothing left to spend
    summary = json.loads((second / "summary.json").read_text())  # a failed run, not a result for round 0
    assert "declined 3" in summary["failed"] and summary["test"] is None


@pytest.fixture(scope="module")
def central_run(tiny_bert, tmp_path_factory, stores_root):
    cfg = RunConfig(model_path=str(tiny_bert), embed_dim=16, max_profile_tokens=48, max_item_tokens=16,
                    num_clients=3, num_rounds=2, local_steps=3, patience=0, device="cpu",
                    run_dir=str(tmp_path_factory.mktemp("central-runs")), stores_dir=str(stores_root),
                    dp="central", noise_multiplier=2.0, update_clipping_norm=0.5)
    first = simulate(cfg, run_name="central", cpus_per_client=1, progress=False)
    second = simulate(cfg.replace(num_rounds=1), run_name="central-2", cpus_per_client=1, progress=False)
    return cfg, first, second


def test_when_central_dp_then_server_accounts_each_release(central_run):
    from opacus.accountants import RDPAccountant

    cfg, path, second = central_run
    rows = _rows(path) + _rows(second)  # the second run continues the first one's account
    assert [r["clients"] for r in rows] == [3, 3, 3]
    reference = RDPAccountant()
    for row in rows:
        reference.step(noise_multiplier=2.0, sample_rate=1.0)
        assert row["central-epsilon"] == pytest.approx(reference.get_epsilon(delta=cfg.target_delta))
    summary = json.loads((second / "summary.json").read_text())
    assert summary["dp"] == "central" and summary["central-epsilon"] == pytest.approx(rows[-1]["central-epsilon"])
    assert summary["epsilon-max"] is None  # no client ledgers in central mode
