"""The run directory: resolved config, per-round metrics (JSON + CSV), checkpoints and a log.

Every file is replaced atomically and each checkpoint folder is swapped whole, so a kill at any
moment leaves the previous good version (see :mod:`server.resume` for continuing such a run)."""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common.config import ConfigError, RunConfig
from common.files import atomic_write, current_folder, replace_folder
from common.model import META_FILE, TwoTowerRecommender, save_checkpoint

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
METRICS_JSON = "metrics.json"
METRICS_CSV = "metrics.csv"
SUMMARY_FILE = "summary.json"
FLOWER_RUNS_FILE = "flower-runs.json"
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
        run._attach_log()
        return run

    @classmethod
    def reopen(cls, path: Path) -> RunDirectory:
        """An existing run directory, to continue it; its log file is appended to."""
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{path}: no {CONFIG_FILE}; pass a run directory that PrivRec wrote.")
        run = cls(path)
        run._attach_log()
        return run

    def config(self) -> RunConfig:
        """The run's resolved config, as written when it started."""
        try:
            return RunConfig.from_mapping(json.loads((self.path / CONFIG_FILE).read_text()))
        except (OSError, ValueError) as err:
            raise ConfigError(f"{self.path / CONFIG_FILE}: unreadable ({err}); restore it from a backup.") from err

    def _attach_log(self) -> None:
        handler = logging.FileHandler(self.path / LOG_FILE)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        for name_ in ("privrec", "server", "client", "common", "flwr"):
            logger = logging.getLogger(name_)
            logger.addHandler(handler)
            if logger.level == logging.NOTSET:  # a ServerApp under `flwr run`: nobody set it up
                logger.setLevel(logging.INFO)
        self.handler = handler

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
        """Save a PEFT-format checkpoint under ``checkpoints/<which>`` (swapped in whole)."""
        return replace_folder(self.checkpoints / which, lambda folder: save_checkpoint(model, folder, meta=meta))

    def checkpoint(self, which: str) -> Path | None:
        """The folder of checkpoint ``which`` (None before its first save)."""
        return current_folder(self.checkpoints / which)

    def checkpoint_meta(self, which: str) -> dict[str, Any] | None:
        """The metadata saved with checkpoint ``which`` (None before its first save)."""
        folder = self.checkpoint(which)
        return None if folder is None else json.loads((folder / META_FILE).read_text())

    def add_flower_run(self, run_id: int) -> None:
        """Record the Flower run that works in this directory (a resumed run adds its own)."""
        runs = self.flower_runs()
        if run_id not in runs:
            atomic_write(self.path / FLOWER_RUNS_FILE, json.dumps([*runs, run_id]) + "\n")

    def flower_runs(self) -> list[int]:
        """The Flower run ids that worked in this directory, oldest first."""
        path = self.path / FLOWER_RUNS_FILE
        return [int(r) for r in json.loads(path.read_text())] if path.is_file() else []

    def metrics(self) -> list[dict[str, Any]]:
        """The per-round rows written so far (none before round 0 was evaluated)."""
        path = self.path / METRICS_JSON
        return json.loads(path.read_text()) if path.is_file() else []
