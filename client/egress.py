"""The egress guard: the last check on everything a ClientApp sends to the server.

Guarantee: a reply leaves the client only if it holds

(a) for a train instruction, exactly the tensors the server sent (same names, same shapes,
    float dtype), and, when the round froze some of them (local DP training only the item
    offsets), those unchanged bit for bit;
(b) numeric metrics with known names, one finite number each; under local DP only the two
    that depend on no user (a uniform weight and the epsilon spent), so no loss, count, step
    or timing travels beside the noised tensors.

(c) for a SecAgg+ stage (distributed DP only), the protocol's own record and the emptied legacy
    fit result with weight 1: the device's noised statistic leaves only masked.

Anything else, including every error reply and every exception raised by a handler, becomes an
error reply with one of the fixed codes of :mod:`common.records` and its fixed reason: no free
text, paths, ids, metric names or exception messages reach the server. What went wrong is
logged on the device (exception type and, for PrivRec's own errors, their message; a
traceback only at debug level). It runs as a Flower mod around every handler of the ClientApp.

Every reply that passes is then written to the device's transparency log
(:mod:`client.transparency`) with the epsilon its message charged; a reply that cannot be logged
is not sent (it becomes the ledger-unavailable error, which carries nothing).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable

import numpy as np
from flwr.app import ArrayRecord, Context, Error, Message, MessageType, MetricRecord
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

from client.device import Device, run_settings
from client.encryption import EncryptionError
from client.instructions import BadRequest
from client.policy import PolicyError, PolicyRefusal
from client.privacy_ledger import BudgetExhausted, LedgerError
from client.secure_release import is_secure_aggregation
from client.store import StoreError
from client.transparency import describe_reply, describe_request
from common import records
from common.config import ConfigError, RunConfig

log = logging.getLogger(__name__)

TRAIN_METRICS = frozenset(
    {
        records.NUM_EXAMPLES,
        records.NUM_STEPS,
        records.EXAMPLES_SEEN,
        records.TRAIN_LOSS,
        records.TRAIN_LOSS_FIRST,
        records.TRAIN_LOSS_LAST,
        records.TRAIN_SECONDS,
        records.UNIFORM_WEIGHT,
    }
)
DP_TRAIN_METRICS = frozenset({records.UNIFORM_WEIGHT, records.EPSILON})
EVALUATE_METRICS = frozenset({records.EVAL_USERS, "mrr"})
RANKING_METRIC = re.compile(r"(?:hr|ndcg)@\d{1,3}")
FROZEN_UNDER_ITEM_BIAS_DP = "item_bias."  # the only tensors DP-SGD may change with dp-train = 'item-bias'
# A SecAgg+ reply: the protocol's record, and the legacy fit result secaggplus_mod leaves (emptied).
SECURE_AGGREGATION_RECORDS = frozenset(
    {RECORD_KEY_CONFIGS, "fitres.parameters", "fitres.num_examples", "fitres.metrics", "fitres.status"}
)


class EgressError(RuntimeError):
    """A reply would send something outside the agreed allow-list; it was not sent."""


# PrivRec's own errors, whose messages it wrote itself (logged on the device), and their codes.
_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (EgressError, records.EGRESS_REFUSED),
    (BudgetExhausted, records.BUDGET_EXHAUSTED),
    (LedgerError, records.LEDGER_UNAVAILABLE),
    (BadRequest, records.BAD_REQUEST),
    (PolicyError, records.STORE_UNAVAILABLE),
    (StoreError, records.STORE_UNAVAILABLE),
    (EncryptionError, records.STORE_UNAVAILABLE),
    (ConfigError, records.BAD_REQUEST),
)


def check_reply(request: Message, reply: Message, cfg: RunConfig | None = None) -> None:
    """Raise :class:`EgressError` unless ``reply`` to ``request`` is within the allow-list.

    ``cfg`` (the run's settings) tells whether the round was DP; without it the stricter
    training rules do not apply. Messages name what was refused by kind, never by value.
    """
    kind = request.metadata.message_type
    content = reply.content
    if kind == MessageType.TRAIN and is_secure_aggregation(request):
        _check_secure_aggregation(reply, cfg)
        return
    allowed = {records.METRICS} | ({records.ARRAYS} if kind == MessageType.TRAIN else set())
    extra = set(content.keys()) - allowed
    if extra:
        raise EgressError(
            f"refused a {kind} reply: {len(extra)} record(s) outside the allow-list (allowed: {sorted(allowed)})"
        )
    private = cfg is not None and cfg.dp == "local"
    if kind == MessageType.TRAIN:
        frozen = cfg is not None and cfg.dp == "local" and cfg.dp_train == "item-bias"
        _check_arrays(request, content.get(records.ARRAYS), frozen=frozen)
    names = (DP_TRAIN_METRICS if private else TRAIN_METRICS) if kind == MessageType.TRAIN else EVALUATE_METRICS
    _check_metrics(kind, content.get(records.METRICS), names)


def _check_secure_aggregation(reply: Message, cfg: RunConfig | None) -> None:
    """A SecAgg+ stage's reply: the protocol's own record (keys, encrypted shares, the masked
    vector) and the emptied legacy fit result with weight 1; nothing else."""
    if cfg is None or cfg.dp != "distributed":
        raise EgressError("refused a secure-aggregation reply in a run without dp = 'distributed'")
    content = reply.content
    extra = set(content.keys()) - SECURE_AGGREGATION_RECORDS
    if extra or RECORD_KEY_CONFIGS not in content.config_records:
        raise EgressError(f"refused a secure-aggregation reply: {len(extra)} record(s) outside the allow-list")
    if any(len(array_record) for array_record in content.array_records.values()):
        raise EgressError("refused a secure-aggregation reply: it holds an unmasked tensor")
    weight = content.metric_records.get("fitres.num_examples")
    if weight is not None and dict(weight) != {"num_examples": 1}:
        raise EgressError("refused a secure-aggregation reply: its weight must be 1 (a plain sum)")
    if len(content.config_records.get("fitres.metrics", {})):
        raise EgressError("refused a secure-aggregation reply: it carries metrics")


def _check_arrays(request: Message, sent: object, *, frozen: bool) -> None:
    agreed = request.content.get(records.ARRAYS)
    if not isinstance(sent, ArrayRecord) or not isinstance(agreed, ArrayRecord):
        raise EgressError(
            f"refused a train reply: it must hold an ArrayRecord '{records.ARRAYS}' answering the server's one"
        )
    if set(sent.keys()) != set(agreed.keys()):
        unknown, missing = len(set(sent.keys()) - set(agreed.keys())), len(set(agreed.keys()) - set(sent.keys()))
        raise EgressError(f"refused a train reply: {unknown} tensor name(s) the server did not send, {missing} missing")
    for name, array in sent.items():
        if tuple(array.shape) != tuple(agreed[name].shape):
            raise EgressError(
                f"refused a train reply: tensor {name!r} has shape {tuple(array.shape)}, "
                f"the server's has {tuple(agreed[name].shape)}"
            )
        if str(array.dtype) not in records.TENSOR_DTYPES:
            raise EgressError(
                f"refused a train reply: tensor {name!r} has dtype {array.dtype}; only "
                f"{sorted(records.TENSOR_DTYPES)} may leave"
            )
        if frozen and not name.startswith(FROZEN_UNDER_ITEM_BIAS_DP):
            mine, theirs = array.numpy(), agreed[name].numpy().astype(array.numpy().dtype)
            if not np.array_equal(mine, theirs):
                raise EgressError(f"refused a train reply: tensor {name!r} was frozen this round but changed")


def _check_metrics(kind: str, metrics: object, names: frozenset[str]) -> None:
    if metrics is None:
        return
    if not isinstance(metrics, MetricRecord):
        raise EgressError(f"refused a {kind} reply: '{records.METRICS}' is not a MetricRecord")
    ranking = kind == MessageType.EVALUATE
    unlisted = [n for n in metrics.keys() if n not in names and not (ranking and RANKING_METRIC.fullmatch(n))]
    if unlisted:
        raise EgressError(
            f"refused a {kind} reply: {len(unlisted)} metric name(s) outside the allow-list {sorted(names)}"
        )
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise EgressError(f"refused a {kind} reply: metric {name!r} must be one finite number")


def error_reply(msg: Message, code: int) -> Message:
    """An error reply with ``code`` and its fixed reason, nothing else."""
    if code not in records.ERROR_REASONS:
        code = records.CLIENT_FAILED
    return Message(error=Error(code=code, reason=records.ERROR_REASONS[code]), reply_to=msg)


def code_of(err: BaseException) -> int:
    """The reply code of an exception raised while handling a message."""
    if isinstance(err, PolicyRefusal):
        return err.code
    return next((code for kind, code in _CODES if isinstance(err, kind)), records.CLIENT_FAILED)


class EgressGuard:
    """Flower mod: run the handler, then let its reply out only if :func:`check_reply` passes.

    ``config`` is the run's settings when the app was built with them (simulation); otherwise
    they are read from ``context.run_config`` (``flwr run``).
    """

    def __init__(self, config: RunConfig | None = None) -> None:
        self.config = config

    def __call__(self, msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        kind = msg.metadata.message_type
        cfg, before, request = None, None, _request_facts(msg)
        try:
            cfg = run_settings(self.config, context)
            before = _epsilon_spent(cfg, context)
            reply = call_next(msg, context)
            if reply.has_error():  # whatever a handler or inner mod put in it stays here
                log.warning("%s reply: error %s, sent as its fixed reason only", kind, reply.error.code)
                reply = error_reply(msg, reply.error.code)
            else:
                check_reply(msg, reply, cfg)
        except Exception as err:  # noqa: BLE001 - every failure must leave as a fixed code
            code = code_of(err)
            unexpected = code in (records.CLIENT_FAILED, records.EGRESS_REFUSED)  # a bug, not a refusal
            log.log(
                logging.ERROR if unexpected else logging.WARNING,
                "%s refused (code %d): %s",
                kind,
                code,
                f"{type(err).__name__} (details at debug level)" if code == records.CLIENT_FAILED else err,
            )
            log.debug("details of the %s failure", kind, exc_info=True)
            reply = error_reply(msg, code)
        return _logged(msg, reply, cfg, context, request, before)


def _request_facts(msg: Message) -> dict:
    """The request's side of the transparency-log entry; a malformed request still gets one."""
    try:
        return describe_request(msg)
    except Exception:  # noqa: BLE001 - the handler reports what is malformed
        return {"run": 0, "round": 0, "message": str(msg.metadata.message_type)}


def _epsilon_spent(cfg: RunConfig, context: Context) -> float | None:
    """The device's epsilon before this message (None when its store or ledger cannot be read:
    the handler will then fail, and say why)."""
    try:
        device = Device.locate(cfg, context)
        with device.ledger(device.data(cfg)) as ledger:
            return ledger.epsilon(device.policy)
    except Exception:  # noqa: BLE001 - reported by the handler that needs them
        return None


def _logged(
    msg: Message, reply: Message, cfg: RunConfig | None, context: Context, request: dict, before: float | None
) -> Message:
    """``reply``, once its transparency-log entry is written; a reply that cannot be logged is not
    sent (an error reply, which carries only its code, still goes)."""
    try:
        if cfg is None:
            raise LedgerError("the run's settings are unreadable")
        device = Device.locate(cfg, context)
        with device.ledger(device.data(cfg)) as ledger:
            total = ledger.epsilon(device.policy)
            ledger.record_sent(
                {
                    **request,
                    **describe_reply(reply),
                    "epsilon-total": total,
                    "epsilon-charged": None if before is None else max(total - before, 0.0),
                }
            )
    except Exception as err:  # noqa: BLE001 - the store or ledger is unusable
        if reply.has_error():
            log.warning(
                "%s error reply not in the transparency log (%s)", msg.metadata.message_type, type(err).__name__
            )
            return reply
        log.error(
            "%s reply withheld: its transparency-log entry could not be written (%s)",
            msg.metadata.message_type,
            err if isinstance(err, (LedgerError, StoreError)) else type(err).__name__,
        )
        return error_reply(msg, records.LEDGER_UNAVAILABLE)
    return reply


egress_guard = EgressGuard()
"""The guard for an app built without a config (it reads ``context.run_config``)."""
