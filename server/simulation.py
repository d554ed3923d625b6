"""Run a whole federation on this machine with Flower's simulation engine (Ray, loopback only)."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from common.config import RunConfig
from server.outcome import RunFailed

if TYPE_CHECKING:
    from client.policy import PrivacyPolicy

log = logging.getLogger(__name__)


def backend_config(cpus_per_client: int, *, worker_logs: bool = True) -> dict:
    """Ray bound to 127.0.0.1, no dashboard; each client gets ``cpus_per_client`` cores; the simulated
    devices' own log lines reach this console only with ``worker_logs``."""
    return {
        "init_args": {
            "_node_ip_address": "127.0.0.1",
            "include_dashboard": False,
            "log_to_driver": worker_logs,
            "num_cpus": max(os.cpu_count() or 1, cpus_per_client),
        },
        "client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
    }


def simulate(
    cfg: RunConfig,
    *,
    run_name: str = "",
    cpus_per_client: int | None = None,
    progress: bool = True,
    device_policy: PrivacyPolicy | None = None,
    canaries: int = 0,
    worker_logs: bool = True,
    reset_budgets: bool = False,
    resume: bool = False,
) -> Path:
    """Run ``cfg`` as a simulated federation and return the run directory.

    ``device_policy`` is what every simulated device's owner allows (default: the simulated
    devices' research policy, :data:`client.policy.SIMULATED_DEVICE`); the run config cannot
    change it. ``canaries`` N > 0 plants N synthetic users for the privacy audit, each joining
    on a fair coin (the reviews file plus the joiners is written beside the run directory, and
    the coins into it as ``canaries.json``, for ``privrec audit`` only). ``worker_logs`` = False keeps
    the simulated devices' log lines off this console. ``reset_budgets`` starts the simulated devices'
    ledgers afresh (research: a new federation of the same people); otherwise they remember what
    earlier runs on these stores spent. ``resume`` continues the interrupted run ``run_name``
    (``cfg`` is its own, see :func:`server.resume.resumable`); the devices keep their policies
    unless ``device_policy`` is given.
    """
    from flwr.simulation import run_simulation

    from client.client_app import build_client_app
    from client.policy import SIMULATED_DEVICE
    from client.simulated_devices import apply_device_policy, prepare_simulated_devices, reset_ledgers
    from common import canaries as canary_file
    from server.server_app import build_server_app

    run_name = run_name or time.strftime("%Y%m%d-%H%M%S")
    path = Path(cfg.run_dir) / run_name
    if path.exists() and not resume:
        raise FileExistsError(f"run directory {path} already exists; pick another --run-name.")
    if reset_budgets and resume:
        raise ValueError("--reset-budgets starts a new federation; it cannot be combined with --resume.")
    planted, coins = None, Path(cfg.run_dir) / f".{run_name}-{canary_file.CANARIES_FILE}"
    if resume and coins.is_file():  # the interrupted run planted canaries: the same ones
        planted = canary_file.load(coins)
    elif canaries:
        from common.run_data import load_catalogue

        planted = canary_file.plant(load_catalogue(cfg).ids, canaries)
        canary_file.save(coins, planted)  # kept until the run ends: a resumed run audits the same ones
        cfg = with_canaries(cfg, planted, Path(cfg.run_dir) / f".{run_name}-canary-reviews.jsonl.gz")
    # Clients run one at a time with every core: torch on CPU scales better than two half-machines.
    cpus = cpus_per_client or (os.cpu_count() or 1)
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no usage events leave this machine
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # Ray's future default, without its warning
    # Each simulated device anonymises and encrypts its own partition first (once; reused).
    prepare_simulated_devices(cfg, progress=progress)
    if device_policy is not None or not resume:
        apply_device_policy(cfg, device_policy or SIMULATED_DEVICE)
    if reset_budgets:
        reset_ledgers(cfg, reason="privrec simulate --reset-budgets: a new federation")
    # Flower marks run_simulation deprecated in favour of `flwr run`; it is still the one call
    # that takes app objects (with their config) directly, which `privrec simulate` needs.
    try:
        run_simulation(
            server_app=build_server_app(cfg, run_name=run_name, resume=resume),
            client_app=build_client_app(cfg),
            num_supernodes=cfg.num_clients,
            backend_config=backend_config(cpus, worker_logs=worker_logs),
        )
    except RunFailed:
        pass  # its reason is in the summary, read below with the others
    if not (path / "summary.json").is_file():
        raise RuntimeError(f"the simulation ended without a summary in {path}; see {path / 'run.log'}.")
    failed = json.loads((path / "summary.json").read_text()).get("failed")
    if failed:
        hint = ""
        if "declined" in failed or "budget-exhausted" in failed:
            hint = "; the simulated devices remember what earlier runs spent: add --reset-budgets for a new federation"
        raise RunFailed(f"{failed} (run directory {path}){hint}.")
    if planted is not None:
        canary_file.save(path / canary_file.CANARIES_FILE, planted)
        coins.unlink(missing_ok=True)
    return path


def with_canaries(cfg: RunConfig, planted: list, reviews_path: Path) -> RunConfig:
    """``cfg`` reading the configured reviews plus the planted canaries whose coin came up (written
    to ``reviews_path``, once; the devices' stores are built from it)."""
    from common.data import load_dataset, write_reviews

    if not reviews_path.is_file():
        data = load_dataset(cfg.reviews_file, cfg.items_file, on_bad=cfg.on_bad_record)
        write_reviews(reviews_path, [*data.reviews, *(r for c in planted if c.included for r in c.reviews())])
        log.info(
            "planted %d canaries for the privacy audit (%d joined, on fair coins)",
            len(planted),
            sum(c.included for c in planted),
        )
    return cfg.replace(reviews_path=str(reviews_path))
