"""The device's transparency log: every reply that left this device, and what it cost.

The egress guard (:mod:`client.egress`) describes each request before its handler runs and each
reply after its checks, before it leaves, and appends the description to the store's privacy
ledger (``PrivacyLedger.sent``), so the log is encrypted, bound to the store, versioned against
rollback and locked exactly like the budget. An entry holds what the server received, nothing of
the device's data beyond it: run, round, message type (and SecAgg+ stage), each tensor's name,
shape, dtype and bytes, each metric's name and value, the payload bytes, an error code if the
reply was one, and the epsilon this message charged and the total after it. ``privrec client
audit STORE`` shows it to the owner, and ``--json`` exports :func:`device_report`, the device's
part of a run's audit report.

A reply whose entry cannot be written is not sent (it becomes the ledger-unavailable error).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from flwr.app import Message
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

from client.encryption import Header
from client.instructions import BadRequest, server_round
from client.policy import PrivacyPolicy
from client.privacy_ledger import PrivacyLedger
from client.secure_release import group_round
from client.store import StoreMetadata
from common import records


def describe_request(request: Message) -> dict[str, Any]:
    """The request side of an entry: run, round, message type, SecAgg+ stage. Read before the
    handler runs (Flower's SecAgg+ mod consumes the stage's records)."""
    entry: dict[str, Any] = {
        "run": int(request.metadata.run_id),
        "round": _round(request),
        "message": request.metadata.message_type,
    }
    stage = _stage(request)
    if stage:
        entry["stage"] = stage
    return entry


def describe_reply(reply: Message) -> dict[str, Any]:
    """What ``reply`` sends the server: its tensors, metrics and bytes, or its error code."""
    if reply.has_error():
        return {"error": int(reply.error.code), "bytes": len(reply.error.reason or "")}
    content = reply.content
    return {
        "tensors": [
            [name, list(array.shape), str(array.dtype), len(array.data)]
            for record in content.array_records.values()
            for name, array in record.items()
        ],
        "metrics": {name: value for record in content.metric_records.values() for name, value in record.items()},
        "bytes": records.payload_bytes(content),
    }


def _round(msg: Message) -> int:
    """The round the server's config names; SecAgg+ stages carry it as the message group."""
    if _stage(msg):
        return group_round(msg)
    try:
        return server_round(msg)
    except BadRequest:  # a malformed round number: the reply is an error, logged as round 0
        return 0


def _stage(msg: Message) -> str:
    config = msg.content.config_records.get(RECORD_KEY_CONFIGS) if msg.has_content() else None
    return str(config.get(Key.STAGE, "")) if config is not None else ""


DEVICE_REPORT_FORMAT = 1


def device_report(
    store: Path,
    metadata: StoreMetadata,
    header: Header,
    policy: PrivacyPolicy,
    ledger: PrivacyLedger,
    *,
    run: int | Collection[int | None] | None = None,
) -> dict[str, Any]:
    """What a device can show an auditor (counts and costs, never text or ids): how its data was
    handled, its policy, its ledger (the whole accountant history, for recomputing epsilon) and
    the events and replies of run ``run`` (or of several runs: a resumed one; all runs when None)."""
    runs = None if run is None else {run} if isinstance(run, int) else set(run)

    def mine(e: dict) -> bool:
        return runs is None or e.get("run") in runs

    return {
        "format": DEVICE_REPORT_FORMAT,
        "store": store.name,
        "run": run,
        "data-handling": {
            "anonymiser": metadata.anonymiser,
            "pii-replaced": dict(metadata.pii_counts),
            "own-names": dict(metadata.own_names),
            "users": metadata.num_users,
            "reviews": metadata.num_reviews,
            "warnings": list(metadata.warnings),
            "encryption": {
                "cipher": "AES-256-GCM",
                "format-version": header.version,
                "kdf": header.kdf_name,
                "kdf-params": dict(header.kdf_params),
                "chunk-size": header.chunk_size,
            },
        },
        "policy": policy.to_dict(),
        "ledger": {
            "epsilon-spent": ledger.epsilon(policy),
            "delta": policy.delta,
            "budget": policy.epsilon_budget,
            "accountant": policy.accountant,
            "version": ledger.version,
            "history": [list(h) for h in ledger.history],
            "events": [e for e in ledger.events if mine(e) or e["kind"] == "reset"],
        },
        "sent": [e for e in ledger.sent if mine(e)],
    }
