"""Run a whole federation on this machine with Flower's simulation engine (Ray, loopback only)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from common.config import RunConfig

if TYPE_CHECKING:
    from client.policy import PrivacyPolicy

log = logging.getLogger(__name__)


def backend_config(cpus_per_client: int) -> dict:
    """Ray bound to 127.0.0.1, no dashboard; each client gets ``cpus_per_client`` cores."""
    return {
        "init_args": {"_node_ip_address": "127.0.0.1", "include_dashboard": False,
                      "num_cpus": max(os.cpu_count() or 1, cpus_per_client)},
        "client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
    }


def simulate(cfg: RunConfig, *, run_name: str = "", cpus_per_client: int | None = None,
             progress: bool = True, device_policy: PrivacyPolicy | None = None) -> Path:
    """Run ``cfg`` as a simulated federation and return the run directory.

    ``device_policy`` is what every simulated device's owner allows (default: the simulated
    devices' research policy, :data:`client.policy.SIMULATED_DEVICE`); the run config cannot
    change it.
    """
    from flwr.simulation import run_simulation

    from client.client_app import build_client_app
    from client.policy import SIMULATED_DEVICE
    from client.simulated_devices import apply_device_policy, prepare_simulated_devices
    from server.server_app import build_server_app

    run_name = run_name or time.strftime("%Y%m%d-%H%M%S")
    path = Path(cfg.run_dir) / run_name
    if path.exists():
        raise FileExistsError(f"run directory {path} already exists; pick another --run-name.")
    # Clients run one at a time with every core: torch on CPU scales better than two half-machines.
    cpus = cpus_per_client or (os.cpu_count() or 1)
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no usage events leave this machine
    # Each simulated device anonymises and encrypts its own partition first (once; reused).
    prepare_simulated_devices(cfg, progress=progress)
    apply_device_policy(cfg, device_policy or SIMULATED_DEVICE)
    # Flower marks run_simulation deprecated in favour of `flwr run`; it is still the one call
    # that takes app objects (with their config) directly, which `privrec simulate` needs.
    run_simulation(server_app=build_server_app(cfg, run_name=run_name),
                   client_app=build_client_app(cfg), num_supernodes=cfg.num_clients,
                   backend_config=backend_config(cpus))
    if not (path / "summary.json").is_file():
        raise RuntimeError(f"the simulation ended without a summary in {path}; see {path / 'run.log'}.")
    return path
