"""Deployment on one machine with real processes, following README "Run on several machines"
command for command: a SuperLink with TLS and SuperNode authentication, three registered SuperNodes
(`privrec client node`) on stores their owners prepared, and `flwr run` with SecAgg+ (distributed DP).

Then, on the same federation: an unregistered key and a foreign CA are refused, and a second run
(with a node killed mid-round) finishes with the others and continues the same ledgers.

The scenario (``local_federation.run_scenario``) mostly waits on Flower, so it runs in a thread
from the start of the session (``conftest.py``); these tests, run last, check what it saw. Every
process it starts is stopped by its PID and process group, also when a step fails.
"""

from __future__ import annotations

import json
from pathlib import Path


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_when_readme_is_followed_then_a_secure_aggregation_run_finishes_and_every_ledger_spends(deployment):
    readme = deployment.step("readme")
    run, spent = readme["run"], readme["spent"]
    summary = _summary(run)
    assert summary["dp"] == "distributed" and summary["rounds-trained"] == 1
    assert 0 < summary["federation-epsilon"] <= 8.0 + 1e-6
    assert (run / "checkpoints" / "best" / "adapter_config.json").is_file()
    assert summary["test"]["clients"] == 3.0 and 0 <= summary["test"]["ndcg@10"] <= 1
    for k in (1, 2, 3):
        epsilon, entries = spent[k]
        assert epsilon > 0 and entries >= 1
        status = (deployment.deploy / f"device-{k}" / "node.out").read_text()
        assert "connected, waiting for work" in status and "training" in status and "epsilon spent" in status


def test_when_a_key_is_not_registered_then_the_node_is_refused(deployment):
    result = deployment.step("unregistered")
    assert result.returncode == 1
    assert "did not accept this node" in result.stderr and "register" in result.stderr


def test_when_a_node_trusts_another_ca_then_it_is_refused(deployment):
    result = deployment.step("foreign-ca")
    assert result.returncode == 1 and "did not accept this node" in result.stderr


def test_when_the_superlink_restarts_and_a_node_dies_mid_round_then_the_others_finish_on_the_same_ledgers(deployment):
    restart = deployment.step("restart")
    assert restart["returncode"] == 0, restart["log"]
    summary = _summary(restart["run"])
    assert summary["rounds-trained"] == 1 and summary["test"]["clients"] == 2.0
    for k in (1, 2):  # the survivors' ledgers continue: more entries, more epsilon
        (spent, entries), (spent_before, entries_before) = restart["after"][k], restart["before"][k]
        assert entries > entries_before and spent > spent_before
