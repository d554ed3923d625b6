"""A real federation on 127.0.0.1, started with README "Run on several machines" command for command:
shell 1 (credentials, a SuperLink with TLS and SuperNode authentication) and shell 2 (registration,
three devices' stores, their `privrec client node`, and `flwr run`). Every process it starts is
stopped by its PID and process group on exit, also when the caller fails.

Used by ``tests/test_deployment.py`` and ``scripts/benchmark_deployment.py``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_block(name: str) -> str:
    """The bash block README marks with ``<!-- deploy: NAME -->``."""
    match = re.search(rf"<!-- deploy: {name} -->\n```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    if not match:
        raise AssertionError(f"README has no block marked 'deploy: {name}'")
    return match.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.5)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


def stop(pid: int) -> None:
    """SIGTERM the process group ``pid`` leads (else the process), then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for kill in (lambda: os.killpg(pid, sig), lambda: os.kill(pid, sig)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    return
            time.sleep(0.2)


@dataclass
class LocalFederation:
    """What README's two shells started: the SuperLink (first) and the nodes' PIDs, and shell 2's
    output (its `flwr run` included)."""

    deploy: Path
    port: int
    env: dict[str, str]
    started: list[int] = field(default_factory=list)
    shell2: subprocess.CompletedProcess | None = None

    @property
    def nodes(self) -> list[int]:
        return self.started[1:]

    @property
    def flwr_env(self) -> dict[str, str]:
        """Shell 2's environment after its exports (`flwr` finds the SuperLink in ``$FLWR_HOME``)."""
        return {**self.env, "FLWR_HOME": str(self.deploy / "flwr")}

    def start_superlink(self, block: str) -> None:
        with open(self.deploy / "shell1.log", "a") as log:
            self.started.insert(0, subprocess.Popen(["bash", "-ec", block], cwd=REPO, env=self.env, stdout=log,
                                                    stderr=subprocess.STDOUT, start_new_session=True).pid)
        wait_for_port(self.port)

    def restart_superlink(self) -> None:
        """Stop the SuperLink, then start it again as README's shell 1 does (its credentials exist)."""
        stop(self.started.pop(0))
        self.start_superlink("\n".join(line for line in readme_block("shell 1").splitlines()
                                       if not line.startswith("privrec certs")))


@contextlib.contextmanager
def local_federation(
    deploy: Path, settings: str, timeout: float = 900, on_start: Callable[[LocalFederation], None] | None = None
) -> Iterator[LocalFederation]:
    """README's shell 1, then shell 2 (its run with ``settings`` as ``$SETTINGS``); stops everything
    it started when the block exits. ``on_start`` sees the federation before anything starts."""
    port = free_port()
    env = {**os.environ, "DEPLOY": str(deploy), "PORT": str(port), "HF_HUB_OFFLINE": "1", "SETTINGS": settings,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("FLWR_HOME", None)
    deploy.mkdir(parents=True, exist_ok=True)
    federation = LocalFederation(deploy, port, env)
    if on_start is not None:
        on_start(federation)
    try:
        federation.start_superlink(readme_block("shell 1"))
        federation.shell2 = subprocess.run(["bash", "-ec", readme_block("shell 2")], cwd=REPO, env=env,
                                           capture_output=True, text=True, timeout=timeout)
        federation.started += [int((deploy / f"device-{k}" / "node.pid").read_text()) for k in (1, 2, 3)
                               if (deploy / f"device-{k}" / "node.pid").exists()]
        yield federation
    finally:
        for pid in reversed(federation.started):
            stop(pid)


# ----- The deployment test's scenario, run in the background (tests/test_deployment.py) -----------


@dataclass
class DeploymentScenario:
    """What :func:`run_scenario` saw, step by step; a step it did not reach re-raises the error
    that stopped it."""

    deploy: Path
    steps: dict[str, object] = field(default_factory=dict)
    federation: LocalFederation | None = None
    others: list[int] = field(default_factory=list)  # processes outside the federation (a `flwr run`)
    error: BaseException | None = None

    def pids(self) -> list[int]:
        """Every process the scenario started that may still run, the SuperLink last."""
        nodes = [int(p.read_text()) for p in self.deploy.glob("device-*/node.pid") if p.read_text().strip()]
        started = list(reversed(self.federation.started)) if self.federation else []
        return list(dict.fromkeys([*self.others, *nodes, *started]))

    def step(self, name: str):
        if name not in self.steps:
            raise AssertionError(f"the deployment stopped before step '{name}': {self.error!r}") from self.error
        return self.steps[name]


def epsilon_of(device: Path) -> tuple[float, int]:
    """(epsilon spent, ledger entries) of one device, read as its owner would."""
    from client.policy import PrivacyPolicy, policy_path
    from client.privacy_ledger import LedgerKey, PrivacyLedger
    from client.secrets import resolve_secret
    from client.store import LocalStore

    store = device / "store.prv"
    metadata = LocalStore.open(store, resolve_secret(key_file=str(device / "store.key"))).metadata
    ledger = PrivacyLedger.open(store, LedgerKey.of_store(metadata.pseudonym_key))
    return ledger.epsilon(PrivacyPolicy.load(policy_path(store))), len(ledger.history)


def supernode_of(wrapper: int) -> int:
    """The flower-supernode process a `privrec client node` started (its child, from /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == wrapper:  # field 4 of /proc/PID/stat: the parent's pid
                return int(stat.parent.name)
    raise AssertionError(f"`privrec client node` (pid {wrapper}) has no SuperNode child")


def run_scenario(scenario: DeploymentScenario, settings: str) -> DeploymentScenario:
    """README's federation (shells 1 and 2, ``settings`` as ``$SETTINGS``); then, on it: a node
    with an unregistered key and one trusting a foreign CA; then the SuperLink restarts and a
    second run loses a node mid-round. Each step's observations go into ``scenario.steps``."""
    from common.certificates import make_credentials, make_node_key

    deploy = scenario.deploy
    try:
        keep = functools.partial(setattr, scenario, "federation")
        with local_federation(deploy, settings, on_start=keep) as federation:
            shell2 = federation.shell2
            assert shell2 is not None and shell2.returncode == 0, shell2.stdout[-3000:] + shell2.stderr[-3000:]
            [run] = [p for p in (deploy / "runs").iterdir() if (p / "summary.json").exists()]
            scenario.steps["readme"] = {"run": run, "spent": {k: epsilon_of(deploy / f"device-{k}") for k in (1, 2, 3)}}
            make_node_key(deploy / "intruder")
            scenario.steps["unregistered"] = _node(federation, deploy / "intruder", deploy / "credentials" / "ca.crt")
            make_credentials(deploy / "other", hosts=["127.0.0.1"], nodes=[])
            scenario.steps["foreign-ca"] = _node(
                federation, deploy / "credentials" / "nodes" / "node-1", deploy / "other" / "ca.crt"
            )
            scenario.steps["restart"] = _restart_and_lose_a_node(federation, scenario.others)
    except BaseException as error:  # noqa: BLE001 - reported by the test that needs the missing step
        scenario.error = error
    return scenario


def _node(federation: LocalFederation, key: Path, ca: Path) -> subprocess.CompletedProcess:
    deploy, port = federation.deploy, federation.port
    return subprocess.run(
        ["privrec", "client", "node", str(deploy / "device-1" / "store.prv"), "--key-file",
         str(deploy / "device-1" / "store.key"), "--superlink", f"127.0.0.1:{port}", "--ca", str(ca),
         "--auth-key", str(key), "--port", str(free_port())],
        cwd=REPO, env=federation.flwr_env, capture_output=True, text=True, timeout=120)


def _restart_and_lose_a_node(federation: LocalFederation, others: list[int]) -> dict:
    """The SuperLink restarts (the nodes reconnect by themselves: they are in its database), then a
    second run (as README's, strict budgets leaving room for two) loses node 3 mid-round."""
    deploy, env = federation.deploy, federation.flwr_env
    before = {k: epsilon_of(deploy / f"device-{k}") for k in (1, 2, 3)}
    outs = [deploy / f"device-{k}" / "node.out" for k in (1, 2, 3)]
    connected = [o.read_text().count("connected, waiting for work") for o in outs]
    federation.restart_superlink()
    deadline = time.monotonic() + 180
    while any(o.read_text().count("connected, waiting for work") <= c for o, c in zip(outs, connected)):
        assert time.monotonic() < deadline, [o.read_text()[-500:] for o in outs]
        time.sleep(0.5)
    settings = (f"num-clients=3 run-dir='{deploy}/runs' target-epsilon=3 {env['SETTINGS']} secagg-threshold=2 "
                "min-train-clients=2")
    runs_before = {p.name for p in (deploy / "runs").iterdir()}
    with open(deploy / "run2.log", "w") as out:
        run = subprocess.Popen(["flwr", "run", ".", "privrec", "--stream", "--run-config", settings], cwd=REPO,
                               env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        others.append(run.pid)
        try:
            node3 = deploy / "device-3" / "node.out"
            seen = node3.read_text().count("training")
            deadline = time.monotonic() + 300
            while node3.read_text().count("training") == seen:
                assert time.monotonic() < deadline and run.poll() is None, (deploy / "run2.log").read_text()[-3000:]
                time.sleep(0.5)
            os.kill(supernode_of(federation.nodes[2]), signal.SIGKILL)  # mid-round, without a goodbye
            returncode = run.wait(timeout=600)
        finally:
            stop(run.pid)
    [second] = [p for p in (deploy / "runs").iterdir() if p.name not in runs_before]
    return {"before": before, "after": {k: epsilon_of(deploy / f"device-{k}") for k in (1, 2)},
            "returncode": returncode, "log": (deploy / "run2.log").read_text()[-3000:], "run": second}
