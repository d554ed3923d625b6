"""What a device owner runs to join a deployed federation: Flower's own ``flower-supernode``,
pointed at this device's encrypted store, secret, privacy policy and compute device, with TLS and
SuperNode authentication, watched and summarised as one status line per change.

The SuperNode does the networking: it dials the SuperLink, reconnects with back-off when the
link drops (a SuperLink restart included), and starts the ClientApp for each message. This module
builds its command line (:func:`supernode_command`), reads its log into states (:class:`NodeStatus`)
and adds what only the device knows: the epsilon its ledger has spent. The SuperNode's full
output goes to a log file beside the store.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from common import records
from common.config import DEVICES

# What the SuperNode (flwr 1.42) prints, and what it means for the owner.
_RUN_ROUND = re.compile(r"\[RUN (\d+)(?:, ROUND (\d+))?\]")
_RECEIVING = re.compile(r"Receiving: (\w+) message")
_SENT = "Sent successfully"
_CONNECTED = ("SuperNode ID:", "Connection successful")
_RETRYING = "Connection attempt failed"
_REFUSED = re.compile(r"Exit Code: (\d+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
TASK_POLL_ENV, TASK_POLL_SECONDS = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.1"  # Flower's own knob


class NodeError(ValueError):
    """The node cannot start as asked (a missing file, a bad address)."""


@dataclass(frozen=True)
class NodeSettings:
    """Everything ``privrec client node`` needs; checked by :meth:`check`."""

    store: Path
    superlink: str
    root_certificates: Path | None
    auth_key: Path | None
    key_file: str | None = None
    passphrase_file: str | None = None
    passphrase_env: str | None = None
    policy: Path | None = None
    device: str = "auto"
    port: int = 9094
    insecure: bool = False

    def check(self) -> None:
        """One-line errors for what would make the SuperNode fail later, less clearly."""
        if not self.store.is_file():
            raise NodeError(f"store {self.store} does not exist; make it with `privrec client prepare`")
        host, _, port = self.superlink.rpartition(":")
        if not host or not port.isdigit():
            raise NodeError(f"--superlink {self.superlink!r} should be HOST:PORT, e.g. 10.0.0.5:9093")
        if self.insecure:
            if self.root_certificates or self.auth_key:
                raise NodeError("--insecure turns TLS off; drop --ca and --auth-key, or drop --insecure")
        else:
            for flag, path in (("--ca", self.root_certificates), ("--auth-key", self.auth_key)):
                if path is None:
                    raise NodeError(
                        f"{flag} is missing: a node joins over TLS with its registered key (from "
                        "`privrec certs`); --insecure is for local trials only"
                    )
                if not path.is_file():
                    raise NodeError(f"{flag} {path} does not exist; copy it from the operator's `privrec certs` folder")
        if sum(bool(s) for s in (self.key_file, self.passphrase_file, self.passphrase_env)) != 1:
            raise NodeError(
                "give exactly one of --key-file, --passphrase-file or --passphrase-env (the store's "
                "secret; the ClientApp opens the store with it for every message)"
            )
        if self.device not in DEVICES:
            raise NodeError(f"--device {self.device!r} should be one of {', '.join(DEVICES)}")

    def node_config(self) -> dict[str, str]:
        """The SuperNode's node config: where this device's data, secret and rules are."""
        config = {records.STORE: str(self.store.resolve()), records.NODE_DEVICE: self.device}
        for key, value in ((records.KEY_FILE, self.key_file), (records.PASSPHRASE_FILE, self.passphrase_file)):
            if value:
                config[key] = str(Path(value).resolve())
        if self.passphrase_env:
            config[records.PASSPHRASE_ENV] = self.passphrase_env
        if self.policy:
            config[records.POLICY] = str(self.policy.resolve())
        return config


def supernode_command(settings: NodeSettings) -> list[str]:
    """``flower-supernode`` with TLS, authentication and this device's node config."""
    binary = shutil.which("flower-supernode") or str(Path(sys.executable).with_name("flower-supernode"))
    node_config = " ".join(f"{key}={_toml_string(value)}" for key, value in settings.node_config().items())
    command = [binary, "--superlink", settings.superlink, "--port", str(settings.port), "--node-config", node_config]
    if settings.insecure:
        return command + ["--insecure"]
    assert settings.root_certificates and settings.auth_key, "NodeSettings.check() requires both without --insecure"
    return command + [
        "--root-certificates",
        str(settings.root_certificates.resolve()),
        "--auth-supernode-private-key",
        str(settings.auth_key.resolve()),
    ]


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class NodeStatus:
    """The node's state, read from the SuperNode's log lines (:meth:`feed`)."""

    state: str = "starting"
    run: int | None = None
    round: int | None = None
    message: str | None = None
    epsilon: float | None = None
    exit_code: int | None = None
    history: list[str] = field(default_factory=list)

    def feed(self, line: str) -> bool:
        """Update from one log line; True when the state the owner sees changed."""
        line = _ANSI.sub("", line)
        before = self.line()
        if any(marker in line for marker in _CONNECTED):
            self.state = "connected, waiting for work"
        elif _RETRYING in line:
            self.state = "SuperLink unreachable, reconnecting"
        elif match := _REFUSED.search(line):
            self.exit_code = int(match.group(1))
            self.state = f"refused by the SuperLink or stopped (Flower exit code {self.exit_code})"
        elif match := _RUN_ROUND.search(line):  # context for the next line, not a change by itself
            self.run = int(match.group(1))
            self.round = int(match.group(2)) if match.group(2) else None
            return False
        elif match := _RECEIVING.search(line):
            self.message = match.group(1)
            self.state = (
                "training" if self.message == "train" else "evaluating" if self.message == "evaluate" else self.message
            )
        elif _SENT in line and self.message:
            self.state = f"replied ({self.message}), waiting for work"
        changed = self.line() != before
        if changed:
            self.history.append(self.line())
        return changed

    def line(self) -> str:
        """One status line: state, run and round, epsilon spent."""
        where = ""
        if self.run is not None and self.state not in ("starting",) and "unreachable" not in self.state:
            where = f"run {self.run}" + (f", round {self.round}" if self.round else "") + ": "
        spent = f"; epsilon spent {self.epsilon:.3f}" if self.epsilon is not None else ""
        return f"{where}{self.state}{spent}"


def watch(
    lines: Iterable[str],
    status: NodeStatus,
    *,
    log_file,
    epsilon: Callable[[], float | None],
    show: Callable[[str], None],
) -> None:
    """Feed each SuperNode line to ``status`` (full text to ``log_file``); ``show`` each change,
    with the ledger's epsilon re-read after every reply."""
    for line in lines:
        log_file.write(line)
        log_file.flush()
        if status.feed(line):
            if status.state.startswith("replied"):
                status.epsilon = epsilon()
            show(time.strftime("%H:%M:%S ") + status.line())


def run_node(
    settings: NodeSettings, *, epsilon: Callable[[], float | None], show: Callable[[str], None], log_path: Path
) -> int:
    """Start the SuperNode, report its status until it exits, and return its exit code.

    The SuperNode runs in its own process group, which is stopped with it: when it dies, its
    ClientApp processes do not outlive it, and SIGTERM or Ctrl+C to this command stop them all.
    """
    command = supernode_command(settings)
    # The SuperExec looks for a message to start a ClientApp for every second by default; a tenth
    # of a second saves about half a second per message (the owner's own setting wins).
    env = {TASK_POLL_ENV: TASK_POLL_SECONDS, **os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    show(
        time.strftime("%H:%M:%S ") + f"starting: {shlex.join(command[:1] + ['--superlink', settings.superlink])} "
        f"(full log: {log_path})"
    )
    status = NodeStatus(epsilon=epsilon())
    with (
        open(log_path, "a", encoding="utf-8") as log_file,
        subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            bufsize=1,
            start_new_session=True,
        ) as child,
    ):

        def stop_group(*_: object) -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)

        def reap() -> None:  # the SuperNode is gone: stop what it started, which closes the pipe
            child.wait()
            stop_group()

        threading.Thread(target=reap, daemon=True).start()
        previous = signal.signal(signal.SIGTERM, lambda *_: stop_group())
        try:
            assert child.stdout is not None  # stdout=PIPE
            watch(child.stdout, status, log_file=log_file, epsilon=epsilon, show=show)
        except KeyboardInterrupt:
            stop_group()
        finally:
            signal.signal(signal.SIGTERM, previous)
        code = child.wait()
    if status.exit_code is None and code not in (0, -signal.SIGTERM, -signal.SIGINT):
        show(time.strftime("%H:%M:%S ") + f"the SuperNode stopped (exit code {code})")
    return status.exit_code or code


def flwr_exit_hint(code: int) -> str:
    """What an exit code of the SuperNode most likely means for the owner."""
    if code == 305:
        return (
            "the SuperLink did not accept this node: is its public key registered (`flwr supernode register "
            "KEY.pub`), is --ca the operator's CA, and is the SuperLink up at --superlink?"
        )
    return f"flower-supernode stopped with exit code {code}; see the log for details"
