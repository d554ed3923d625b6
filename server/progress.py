"""One line per round for the person who started the run, on the ``privrec.progress`` logger (the
console shows it by default; the run's log keeps it with everything else):

    round 2/3 · clients 3 ok, 0 failed, 0 declined · valid NDCG@10 0.2841 · epsilon 1.27 · 14 s, up to about 7 s left
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

log = logging.getLogger("privrec.progress")


class RoundProgress:
    """Reports each evaluated round of a run of ``rounds`` rounds (round 0 is the untrained model)."""

    def __init__(self, rounds: int, metric: str) -> None:
        self.rounds, self.metric, self.started = rounds, metric, time.perf_counter()

    def report(self, row: Mapping | None) -> None:
        """Log the line of one round's ``metrics.json`` row (None: the round was not evaluated)."""
        if row is None:
            return
        r = int(row["round"])
        parts = [f"round {r}/{self.rounds}" + (" (untrained)" if r == 0 else "")]
        if "clients" in row:
            counts = (
                f"clients {int(row['clients'])} ok, {int(row.get('failed', 0))} failed, "
                f"{int(row.get('declined', 0))} declined"
            )
            if row.get("dropped"):
                counts += f", {int(row['dropped'])} dropped"
            parts.append(counts)
        score = row.get(f"valid-{self.metric}")
        if score is not None:
            parts.append(f"valid {self.metric.upper()} {score:.4f}")
        epsilon = next((row[k] for k in ("epsilon-max", "federation-epsilon", "central-epsilon") if k in row), None)
        if epsilon is not None:
            parts.append(f"epsilon {epsilon:.2f}")
        elapsed = time.perf_counter() - self.started
        timing = f"{elapsed:.0f} s"
        if 0 < r < self.rounds:
            timing += f", up to about {elapsed / r * (self.rounds - r):.0f} s left"
        parts.append(timing)
        log.info(" · ".join(parts))
