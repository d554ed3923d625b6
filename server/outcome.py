"""A run that trained nothing ends as a failure, not as a result table for the untrained model."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class RunFailed(RuntimeError):
    """No round was trained (every client declined, failed or was dropped); the message says why."""


def failure(history: Iterable[Mapping], min_clients: int) -> str | None:
    """Why the run trained nothing (None when some round was aggregated or released)."""
    rounds = [r for r in history if r.get("round", 0) >= 1]
    if any(r.get("clients") for r in rounds):
        return None
    reasons = [str(r["failure"]) for r in rounds if r.get("failure")]
    if reasons:  # the secure release's own account (distributed DP)
        return f"no round was trained: {reasons[-1]}"
    counts = {kind: sum(int(r.get(kind, 0)) for r in rounds) for kind in ("declined", "failed", "dropped")}
    return (
        f"no round was trained in {len(rounds)} round(s): clients declined {counts['declined']} time(s), "
        f"failed {counts['failed']}, and {counts['dropped']} replies were dropped as invalid, leaving fewer "
        f"than min-train-clients ({min_clients}); check the devices' privacy budgets and logs"
    )
