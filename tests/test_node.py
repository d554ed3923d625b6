"""`privrec client node`: the SuperNode's command line and the owner's status line (client/node.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from client.node import NodeError, NodeSettings, NodeStatus, flwr_exit_hint, supernode_command
from common import records
from common.cli import app

SUPERNODE_LOG = """\x1b[92mINFO \x1b[0m:      Starting Flower SuperNode
\x1b[92mINFO \x1b[0m:      SuperNode ID: 1149
\x1b[92mINFO \x1b[0m:      [RUN 1078, ROUND 1]
\x1b[92mINFO \x1b[0m:      Receiving: train message (ID: 2c14)
\x1b[92mINFO \x1b[0m:      Received successfully
11/30/2026 19:34:41:DEBUG:Node 1149: starting stage 0...
\x1b[92mINFO \x1b[0m:      [RUN 1078, ROUND 1]
\x1b[92mINFO \x1b[0m:      Sending: train message (ID: 1baa)
\x1b[92mINFO \x1b[0m:      Sent successfully
\x1b[93mWARNING \x1b[0m:   Connection attempt failed, retrying in 1.48 seconds
\x1b[92mINFO \x1b[0m:      Connection successful after 9.94 seconds and 5 tries.
"""


def _settings(tmp_path, **changes) -> NodeSettings:
    for name in ("store.prv", "ca.crt", "node-1"):
        (tmp_path / name).write_text("x")
    values = dict(store=tmp_path / "store.prv", superlink="127.0.0.1:9093", root_certificates=tmp_path / "ca.crt",
                  auth_key=tmp_path / "node-1", key_file=str(tmp_path / "store.key"))
    return NodeSettings(**{**values, **changes})


def test_when_the_supernode_logs_then_the_owner_sees_one_line_per_change():
    status = NodeStatus(epsilon=0.5)
    shown = [status.line() for line in SUPERNODE_LOG.splitlines() if status.feed(line)]
    assert shown == [
        "connected, waiting for work; epsilon spent 0.500",
        "run 1078, round 1: training; epsilon spent 0.500",
        "run 1078, round 1: replied (train), waiting for work; epsilon spent 0.500",
        "SuperLink unreachable, reconnecting; epsilon spent 0.500",
        "run 1078, round 1: connected, waiting for work; epsilon spent 0.500",
    ]


def test_when_the_superlink_refuses_then_the_exit_code_is_kept_and_explained():
    status = NodeStatus()
    status.feed("\x1b[91mERROR \x1b[0m:     Exit Code: 305")
    assert status.exit_code == 305 and "register" in flwr_exit_hint(305)


def test_when_node_runs_then_flower_gets_tls_auth_and_this_devices_node_config(tmp_path):
    settings = _settings(tmp_path, device="cpu", policy=tmp_path / "strict.toml")
    command = supernode_command(settings)
    assert command[0].endswith("flower-supernode") and "--insecure" not in command
    assert command[command.index("--root-certificates") + 1] == str((tmp_path / "ca.crt").resolve())
    assert command[command.index("--auth-supernode-private-key") + 1] == str((tmp_path / "node-1").resolve())
    node_config = command[command.index("--node-config") + 1]
    assert f'{records.STORE}="{(tmp_path / "store.prv").resolve()}"' in node_config
    assert f'{records.NODE_DEVICE}="cpu"' in node_config and f'{records.POLICY}="' in node_config
    assert "--insecure" in supernode_command(_settings(tmp_path, insecure=True, root_certificates=None, auth_key=None))


@pytest.mark.parametrize("changes, message", [
    ({"superlink": "nohost"}, "should be HOST:PORT"),
    ({"root_certificates": None}, "--ca is missing"),
    ({"auth_key": "missing"}, "--auth-key .* does not exist"),
    ({"insecure": True}, "--insecure turns TLS off"),
    ({"key_file": None}, "exactly one of --key-file"),
    ({"device": "tpu"}, "--device 'tpu'"),
])
def test_when_node_settings_are_wrong_then_one_clear_error(tmp_path, changes, message):
    if changes.get("auth_key") == "missing":
        changes = {"auth_key": tmp_path / "missing"}
    with pytest.raises(NodeError, match=message):
        _settings(tmp_path, **changes).check()


def test_when_node_command_has_no_store_then_it_fails_in_one_line(tmp_path):
    result = CliRunner().invoke(app, ["client", "node", str(tmp_path / "nope.prv"), "--superlink", "127.0.0.1:9"])
    assert result.exit_code == 2 and "does not exist; make it with `privrec client prepare`" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_when_node_config_names_a_device_then_the_client_computes_there(tiny_config):
    from helpers import node_context

    from client.device import run_settings

    assert run_settings(tiny_config.replace(device="auto"), node_context({records.NODE_DEVICE: "cpu"})).device == "cpu"
    assert run_settings(tiny_config, node_context({})).device == tiny_config.device


def test_when_a_clientapp_process_starts_then_it_imports_no_model_or_anonymiser_library():
    # Deployment starts one ClientApp process per message; the SecAgg+ stages need none of these.
    heavy = ("torch", "transformers", "peft", "opacus", "presidio_analyzer", "spacy")
    out = subprocess.run([sys.executable, "-c", "import sys, client.client_app; "
                          f"print([m for m in {heavy!r} if m in sys.modules])"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
