"""The run directory: resolved config, per-round metrics (JSON + CSV), checkpoints and a log."""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common.config import RunConfig
from common.files import atomic_write
from common.model import TwoTowerRecommender, save_checkpoint

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
METRICS_JSON = "metrics.json"
METRICS_CSV = "metrics.csv"
SUMMARY_FILE = "summary.json"
LOG_FILE = "run.log"
BEST = "best"
LAST = "last"


class RunDirectory:
    """One folder per run under ``run-dir``; never reuses an existing folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.checkpoints = path / "checkpoints"
        self.handler: logging.Handler | None = None  # the run's log file, while the run is open

    @classmethod
    def create(cls, cfg: RunConfig, name: str = "") -> RunDirectory:
        """Make ``<run-dir>/<name or timestamp>``, write the config and attach a log file."""
        name = name or time.strftime("%Y%m%d-%H%M%S")
        path = Path(cfg.run_dir) / name
        try:
            path.mkdir(parents=True, exist_ok=False)
        except FileExistsError as err:
            raise FileExistsError(
                f"run directory {path} already exists; pick another run name "
                "so that earlier results are not overwritten."
            ) from err
        run = cls(path)
        atomic_write(path / CONFIG_FILE, cfg.to_json() + "\n")
        handler = logging.FileHandler(path / LOG_FILE)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        for name_ in ("privrec", "server", "client", "common", "flwr"):
            logger = logging.getLogger(name_)
            logger.addHandler(handler)
            if logger.level == logging.NOTSET:  # a ServerApp under `flwr run`: nobody set it up
                logger.setLevel(logging.INFO)
        run.handler = handler
        return run

    def close(self) -> None:
        """Detach the log file."""
        handler = self.handler
        if handler is not None:
            for name_ in ("privrec", "server", "client", "common", "flwr"):
                logging.getLogger(name_).removeHandler(handler)
            handler.close()
            self.handler = None

    def write_metrics(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Per-round metrics as JSON and CSV (rewritten after every round)."""
        atomic_write(self.path / METRICS_JSON, json.dumps(list(history), indent=2) + "\n")
        columns: list[str] = []
        for row in history:
            columns.extend(k for k in row if k not in columns)
        table = io.StringIO(newline="")
        writer = csv.DictWriter(table, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
        atomic_write(self.path / METRICS_CSV, table.getvalue())

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Final results of the run."""
        atomic_write(self.path / SUMMARY_FILE, json.dumps(dict(summary), indent=2) + "\n")

    def save(self, which: str, model: TwoTowerRecommender, *, meta: Mapping[str, Any]) -> Path:
        """Save a PEFT-format checkpoint under ``checkpoints/<which>``."""
        target = self.checkpoints / which
        save_checkpoint(model, target, meta=meta)
        return target
