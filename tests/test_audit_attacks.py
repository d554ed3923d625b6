"""Empirical attacks of the privacy audit: canaries, membership inference, the one-run lower bound."""

import json
import math
from pathlib import Path

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


@pytest.fixture(scope="module")
def canary_run(tiny_bert, tmp_path_factory):
    """A short distributed-DP simulation with 40 canaries, and its audit report (written)."""
    from client.policy import SIMULATED_DEVICE
    from common.report import write_report
    from server.audit import collect
    from server.simulation import simulate

    root = tmp_path_factory.mktemp("canary-run")
    cfg = RunConfig(dp="distributed", target_epsilon=4.0, model_path=str(tiny_bert), embed_dim=16,
                    max_profile_tokens=48, max_item_tokens=16, num_clients=3, num_rounds=1, patience=0,
                    run_dir=str(root / "runs"), device="cpu", stores_dir=str(root / "stores"),
                    pii_model="none")  # stores of their own (the joiners' reviews): patterns suffice here
    path = simulate(cfg, run_name="canaries", cpus_per_client=1, progress=False, canaries=40,
                    device_policy=SIMULATED_DEVICE)
    report = collect(path)
    return cfg, path, report, write_report(report, path / "audit")


def test_when_a_run_has_canaries_then_the_audit_attacks_them(canary_run):
    _, path, report, _ = canary_run
    planted = canaries.load(path / canaries.CANARIES_FILE)
    assert len(planted) == 40
    config = json.loads((path / "config.json").read_text())
    assert config["reviews-path"].endswith("canary-reviews.jsonl.gz")  # the devices were built with the joiners
    attacks = report["attacks"]
    assert attacks["status"] == "run" and attacks["canaries"] == 40
    assert attacks["included"] == sum(c.included for c in planted)
    assert set(attacks["attacks"]) == {"threshold", "calibrated"}
    assert all(0.0 <= a["auc"] <= 1.0 for a in attacks["attacks"].values())
    claimed = json.loads((path / "summary.json").read_text())["federation-epsilon"]
    assert attacks["claimed-epsilon"] == claimed and 0.0 <= attacks["lower-bound"]["epsilon"] <= claimed
    assert [f for f in report["findings"] if f["severity"] == "failure"] == []


def test_the_report_matches_the_runs_own_records(canary_run):
    """Epsilons equal the ledgers and an independent recomputation; bytes equal the transparency logs."""
    from opacus.accountants import RDPAccountant

    from client.simulated_devices import device_ledger
    from client.policy import SIMULATED_DEVICE

    cfg, path, report, paths = canary_run
    saved = json.loads(paths["json"].read_text())
    summary = json.loads((path / "summary.json").read_text())
    run_id = summary["run-id"]
    federation = saved["accounting"]["federation"]
    reference = RDPAccountant()
    reference.history = [tuple(h) for h in summary["federation-accountant"]["history"]]
    assert federation["epsilon-claimed"] == summary["federation-epsilon"]
    assert federation["epsilon-recomputed"] == pytest.approx(reference.get_epsilon(delta=cfg.target_delta))
    cfg = RunConfig.from_mapping(json.loads((path / "config.json").read_text()))
    for partition, (device, egress) in enumerate(zip(saved["accounting"]["devices"], saved["egress"]["per-device"])):
        with device_ledger(cfg, partition) as ledger:
            assert device["epsilon-claimed"] == pytest.approx(ledger.epsilon(SIMULATED_DEVICE))
            sent = [e for e in ledger.sent if e["run"] == run_id]
        by_round = {}
        for e in sent:
            by_round[str(e["round"])] = by_round.get(str(e["round"]), 0) + e["bytes"]
        assert egress["bytes-by-round"] == by_round and egress["replies"] == len(sent) > 0
        stages = [e.get("stage") for e in sent if e["message"] == "train"]
        assert stages == ["setup", "share_keys", "collect_masked_vectors", "unmask"]  # the release, round 1
        assert {e["round"] for e in sent if e["message"] == "train"} == {1}
        charged = [e for e in sent if e["epsilon-charged"]]
        assert [e["stage"] for e in charged] == ["collect_masked_vectors"]  # recorded before the masked vector left


CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / ".test-artifacts"


@pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_html_report_renders_in_headless_chromium_with_its_plots_and_numbers(canary_run):
    from playwright.sync_api import sync_playwright

    _, _, report, paths = canary_run
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            requests = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(paths["html"].as_uri())
            page.wait_for_load_state("load")
            images = page.evaluate("[...document.images].map(i => [i.alt, i.complete && i.naturalWidth > 0])")
            text = page.inner_text("body")
            page.screenshot(path=str(ARTIFACTS / "audit-report.png"), full_page=True)
        finally:
            browser.close()
    assert sorted(images) == sorted([[name, True] for name in ("epsilon", "utility", "egress", "roc", "canaries")])
    assert all(url.startswith(("file:", "data:")) for url in requests)  # nothing from the network
    assert "All checks passed." in text
    assert f"{report['accounting']['federation']['epsilon-recomputed']:.4f}" in text
    assert f"epsilon >= {report['attacks']['lower-bound']['epsilon']:.3f}" in text
    assert (ARTIFACTS / "audit-report.png").stat().st_size > 10_000


@pytest.mark.parametrize("damage, named", [
    ("missing", "not a directory"), ("no-summary", "summary.json is missing"),
    ("unfinished", "did not finish"), ("foreign", "is not a PrivRec run's config")])
def test_when_the_run_directory_is_missing_partial_or_foreign_then_one_line_names_it(canary_run, tmp_path,
                                                                                     damage, named):
    import shutil

    from typer.testing import CliRunner

    from common.cli import app

    _, path, _, _ = canary_run
    target = tmp_path / "run"
    if damage != "missing":
        shutil.copytree(path, target, ignore=shutil.ignore_patterns("checkpoints", "audit"))
    if damage == "no-summary":
        (target / "summary.json").unlink()
    elif damage == "unfinished":
        (target / "summary.json").write_text(json.dumps({"best-round": 0}))
    elif damage == "foreign":
        (target / "config.json").write_text(json.dumps({"model": "resnet", "epochs": 3}))
    result = CliRunner().invoke(app, ["audit", str(target)])
    assert result.exit_code == 2 and named in " ".join(result.output.split())
    assert "Traceback" not in result.output and not (target / "audit").exists()
