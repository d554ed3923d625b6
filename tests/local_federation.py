"""A real federation on 127.0.0.1, started with README "Run on several machines" command for command:
shell 1 (credentials, a SuperLink with TLS and SuperNode authentication) and shell 2 (registration,
three devices' stores, their `privrec client node`, and `flwr run`). Every process it starts is
stopped by its PID and process group on exit, also when the caller fails.

Used by ``tests/test_deployment.py`` and ``scripts/benchmark_deployment.py``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

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
def local_federation(deploy: Path, settings: str, timeout: float = 900) -> Iterator[LocalFederation]:
    """README's shell 1, then shell 2 (its run with ``settings`` as ``$SETTINGS``); stops everything
    it started when the block exits."""
    port = free_port()
    env = {**os.environ, "DEPLOY": str(deploy), "PORT": str(port), "HF_HUB_OFFLINE": "1", "SETTINGS": settings,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("FLWR_HOME", None)
    deploy.mkdir(parents=True, exist_ok=True)
    federation = LocalFederation(deploy, port, env)
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
