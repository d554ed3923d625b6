"""Empirical attacks of the privacy audit: canaries, membership inference, the one-run lower bound."""

import json
import math

import numpy as np
import pytest

from common import canaries
from common.config import RunConfig
from server.attacks import one_run_lower_bound, roc


def test_when_canaries_are_planted_then_each_joins_on_a_coin_and_carries_its_phrase():
    ids = [f"D{i:04d}" for i in range(50)]
    planted = canaries.plant(ids, 400)
    assert 140 < sum(c.included for c in planted) < 260  # fair coins (P of failing < 1e-9)
    assert len({c.user_id for c in planted}) == 400
    assert all(len(set(c.items)) == canaries.CANARY_ITEMS and set(c.items) <= set(ids) for c in planted)
    reviews = planted[0].reviews()
    assert [r.item_id for r in reviews] == list(planted[0].items) and all(planted[0].phrase in r.text for r in reviews)
    assert planted[0].reviews() == reviews  # the auditor rebuilds exactly what joined
    again = canaries.plant(ids, 400)
    assert [c.included for c in again] != [c.included for c in planted]  # OS entropy: no replayable seed


def test_roc_of_a_perfect_and_of_a_useless_attack():
    labels = np.array([True] * 50 + [False] * 50)
    perfect = roc(np.where(labels, 1.0, 0.0) + np.arange(100) * 1e-6, labels)
    assert perfect["auc"] == 1.0 and perfect["tpr@1%fpr"] == 1.0
    useless = roc(np.zeros(100), labels)
    assert useless["auc"] == 0.5 and useless["tpr@1%fpr"] == 0.0


def test_lower_bound_is_large_for_a_leaky_model_and_small_for_noise():
    rng = np.random.default_rng(0)
    labels = rng.random(1000) < 0.5
    leaky = one_run_lower_bound(labels + rng.normal(0, 0.01, 1000), labels)
    assert leaky["epsilon"] > 3 and leaky["correct"] == leaky["guesses"]
    blind = one_run_lower_bound(rng.normal(size=1000), labels)
    assert blind["epsilon"] < 0.3


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 2.0])
def test_lower_bound_never_exceeds_the_epsilon_of_randomised_response(epsilon):
    """A mechanism that is exactly epsilon-DP (randomised response on each coin): the bound may pass epsilon
    only as often as its confidence allows (5%; here at most 3 of 30 runs, P(more) < 0.06 if it is right)."""
    rng = np.random.default_rng(int(epsilon * 10))
    bounds = []
    for _ in range(30):
        labels = rng.random(2000) < 0.5
        truthful = rng.random(2000) < math.exp(epsilon) / (1 + math.exp(epsilon))
        bounds.append(one_run_lower_bound(np.where(truthful, labels, ~labels) + rng.normal(0, 1e-3, 2000), labels)["epsilon"])
    assert sum(b > epsilon for b in bounds) <= 3 and max(bounds) < 1.5 * epsilon
    assert np.median(bounds) > epsilon / 3  # and it is not vacuous


def test_when_a_run_has_canaries_then_the_audit_attacks_them_and_plots_the_roc(tiny_bert, tmp_path):
    from common.report import write_report
    from server.audit import collect
    from server.simulation import simulate

    cfg = RunConfig(dp="none", model_path=str(tiny_bert), embed_dim=16, max_profile_tokens=48, max_item_tokens=16,
                    num_clients=3, num_rounds=1, local_steps=2, patience=0, run_dir=str(tmp_path / "runs"),
                    device="cpu", stores_dir=str(tmp_path / "stores"))
    path = simulate(cfg, run_name="canaries", cpus_per_client=1, progress=False, canaries=40)
    planted = canaries.load(path / canaries.CANARIES_FILE)
    assert len(planted) == 40
    config = json.loads((path / "config.json").read_text())
    assert config["reviews-path"].endswith("canary-reviews.jsonl.gz")  # the devices were built with the joiners
    report = collect(path)
    attacks = report["attacks"]
    assert attacks["status"] == "run" and attacks["canaries"] == 40
    assert attacks["included"] == sum(c.included for c in planted)
    assert set(attacks["attacks"]) == {"threshold", "calibrated"}
    assert all(0.0 <= a["auc"] <= 1.0 for a in attacks["attacks"].values())
    assert attacks["lower-bound"]["epsilon"] >= 0.0 and attacks["claimed-epsilon"] is None  # no DP claimed
    page = write_report(report, tmp_path / "audit")["html"].read_text()
    assert page.count("data:image/png;base64,") == 5 and "One-run lower bound" in page
