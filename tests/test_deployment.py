"""Deployment on one machine with real processes, following README "Run on several machines"
command for command: a SuperLink with TLS and SuperNode authentication, three registered SuperNodes
(`privrec client node`) on stores their owners prepared, and `flwr run` with SecAgg+ (distributed DP).

Then, on the same federation: an unregistered key and a foreign CA are refused, and a second run
(with a node killed mid-round) finishes with the others and continues the same ledgers. Every
process is stopped by its PID (and process group) at the end, also when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from client.privacy_ledger import LedgerKey, PrivacyLedger
from client.policy import PrivacyPolicy, policy_path
from client.secrets import resolve_secret
from client.store import LocalStore
from common.certificates import make_credentials, make_node_key
from local_federation import REPO, free_port, local_federation, stop

TINY = "embed-dim=16 max-profile-tokens=48 max-item-tokens=16 max-eval-users=60"


def supernode_of(wrapper: int) -> int:
    """The flower-supernode process a `privrec client node` started (its child, from /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == wrapper:  # field 4 of /proc/PID/stat: the parent's pid
                return int(stat.parent.name)
    raise AssertionError(f"`privrec client node` (pid {wrapper}) has no SuperNode child")


def epsilon_of(device: Path) -> tuple[float, int]:
    """(epsilon spent, ledger entries) of one device, read as its owner would."""
    store = device / "store.prv"
    metadata = LocalStore.open(store, resolve_secret(key_file=str(device / "store.key"))).metadata
    ledger = PrivacyLedger.open(store, LedgerKey.of_store(metadata.pseudonym_key))
    return ledger.epsilon(PrivacyPolicy.load(policy_path(store))), len(ledger.history)


@pytest.fixture(scope="module")
def federation(tmp_path_factory, tiny_bert):
    deploy = tmp_path_factory.mktemp("deploy")
    settings = f"model-path='{tiny_bert}' {TINY}"
    with local_federation(deploy, settings) as running:
        shell2 = running.shell2
        assert shell2.returncode == 0, shell2.stdout[-3000:] + shell2.stderr[-3000:]
        yield running


def _runs(deploy: Path) -> list[Path]:
    return sorted(p for p in (deploy / "runs").iterdir() if (p / "summary.json").exists())


def test_when_readme_is_followed_then_a_secure_aggregation_run_finishes_and_every_ledger_spends(federation):
    deploy = federation.deploy
    [run] = _runs(deploy)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["dp"] == "distributed" and summary["rounds-trained"] == 1
    assert 0 < summary["federation-epsilon"] <= 8.0 + 1e-6
    assert (run / "checkpoints" / "best" / "adapter_config.json").is_file()
    assert summary["test"]["clients"] == 3.0 and 0 <= summary["test"]["ndcg@10"] <= 1
    for k in (1, 2, 3):
        spent, entries = epsilon_of(deploy / f"device-{k}")
        assert spent > 0 and entries >= 1
        status = (deploy / f"device-{k}" / "node.out").read_text()
        assert "connected, waiting for work" in status and "training" in status and "epsilon spent" in status


def _node(federation, key: Path, ca: Path) -> subprocess.CompletedProcess:
    deploy, port = federation.deploy, federation.port
    return subprocess.run(
        ["privrec", "client", "node", str(deploy / "device-1" / "store.prv"), "--key-file",
         str(deploy / "device-1" / "store.key"), "--superlink", f"127.0.0.1:{port}", "--ca", str(ca),
         "--auth-key", str(key), "--port", str(free_port())],
        cwd=REPO, env=federation.flwr_env, capture_output=True, text=True, timeout=120)


def test_when_a_key_is_not_registered_then_the_node_is_refused(federation):
    deploy = federation.deploy
    make_node_key(deploy / "intruder")
    result = _node(federation, deploy / "intruder", deploy / "credentials" / "ca.crt")
    assert result.returncode == 1
    assert "did not accept this node" in result.stderr and "register" in result.stderr


def test_when_a_node_trusts_another_ca_then_it_is_refused(federation):
    deploy = federation.deploy
    make_credentials(deploy / "other", hosts=["127.0.0.1"], nodes=[])
    result = _node(federation, deploy / "credentials" / "nodes" / "node-1", deploy / "other" / "ca.crt")
    assert result.returncode == 1 and "did not accept this node" in result.stderr


def test_when_the_superlink_restarts_and_a_node_dies_mid_round_then_the_others_finish_on_the_same_ledgers(federation):
    deploy, env = federation.deploy, federation.flwr_env
    before = {k: epsilon_of(deploy / f"device-{k}") for k in (1, 2, 3)}
    outs = [deploy / f"device-{k}" / "node.out" for k in (1, 2, 3)]
    connected = [o.read_text().count("connected, waiting for work") for o in outs]
    federation.restart_superlink()  # the registered nodes are in its database; the nodes reconnect by themselves
    deadline = time.monotonic() + 180
    while any(o.read_text().count("connected, waiting for work") <= c for o, c in zip(outs, connected)):
        assert time.monotonic() < deadline, [o.read_text()[-500:] for o in outs]
        time.sleep(0.5)
    settings = (f"num-clients=3 run-dir='{deploy}/runs' target-epsilon=3 {env['SETTINGS']} secagg-threshold=2 "
                "min-train-clients=2")  # as README's run: its target-epsilon leaves the strict budget room for two
    out = open(deploy / "run2.log", "w")
    run = subprocess.Popen(["flwr", "run", ".", "privrec", "--stream", "--run-config", settings], cwd=REPO,
                           env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        node3 = deploy / "device-3" / "node.out"
        seen = node3.read_text().count("training")
        deadline = time.monotonic() + 300
        while node3.read_text().count("training") == seen:
            assert time.monotonic() < deadline and run.poll() is None, (deploy / "run2.log").read_text()[-3000:]
            time.sleep(0.5)
        os.kill(supernode_of(federation.nodes[2]), signal.SIGKILL)  # mid-round, without a goodbye
        assert run.wait(timeout=600) == 0, (deploy / "run2.log").read_text()[-3000:]
    finally:
        stop(run.pid)
        out.close()
    second = _runs(deploy)[-1]
    summary = json.loads((second / "summary.json").read_text())
    assert summary["rounds-trained"] == 1 and summary["test"]["clients"] == 2.0
    for k in (1, 2):  # the survivors' ledgers continue: more entries, more epsilon
        spent, entries = epsilon_of(deploy / f"device-{k}")
        assert entries > before[k][1] and spent > before[k][0]
