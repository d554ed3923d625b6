"""The egress guard: the last check on everything a ClientApp sends to the server.

Guarantee: a reply leaves the client only if it holds (a) for a train instruction, exactly
the adapter tensors the server sent (same names, same shapes, float dtype), and (b) numeric
metrics with known names, one finite number each. Strings, lists, config records, extra
tensors or per-user data are refused before sending: the reply becomes an error and nothing
of its content goes out. It runs as a Flower mod around every handler of the ClientApp.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Callable

from flwr.app import ArrayRecord, Context, Error, Message, MessageType, MetricRecord

from common import records

log = logging.getLogger(__name__)

EGRESS_REFUSED = 4101  # error code of a reply the guard stopped (Flower's own codes are < 1000)


TRAIN_METRICS = frozenset({records.NUM_EXAMPLES, records.NUM_STEPS, records.EXAMPLES_SEEN,
                           records.TRAIN_LOSS, records.TRAIN_LOSS_FIRST, records.TRAIN_LOSS_LAST,
                           records.TRAIN_SECONDS, records.EPSILON, records.DELTA,
                           records.NOISE_MULTIPLIER, records.UNIFORM_WEIGHT})
EVALUATE_METRICS = frozenset({records.NUM_EXAMPLES, records.EVAL_USERS, records.EVAL_SECONDS, "mrr"})
_RANKING_METRIC = re.compile(r"(?:hr|ndcg)@\d{1,3}")
ALLOWED_DTYPES = frozenset({"float32", "float16", "bfloat16"})


class EgressError(RuntimeError):
    """A reply would send something outside the agreed allow-list; it was not sent."""


def check_reply(request: Message, reply: Message) -> None:
    """Raise :class:`EgressError` unless ``reply`` to ``request`` is within the allow-list."""
    kind = request.metadata.message_type
    content = reply.content
    allowed = {records.METRICS} | ({records.ARRAYS} if kind == MessageType.TRAIN else set())
    extra = sorted(set(content.keys()) - allowed)
    if extra:
        raise EgressError(f"refused to send a {kind} reply: record(s) {extra} are not allowed "
                          f"(allowed: {sorted(allowed)})")
    if kind == MessageType.TRAIN:
        _check_arrays(request, content.get(records.ARRAYS))
    _check_metrics(kind, content.get(records.METRICS))


def _check_arrays(request: Message, sent: object) -> None:
    agreed = request.content.get(records.ARRAYS)
    if not isinstance(sent, ArrayRecord) or not isinstance(agreed, ArrayRecord):
        raise EgressError("refused to send a train reply: it must hold an ArrayRecord "
                          f"'{records.ARRAYS}' answering the server's one")
    if set(sent.keys()) != set(agreed.keys()):
        unknown = sorted(set(sent.keys()) - set(agreed.keys()))
        missing = sorted(set(agreed.keys()) - set(sent.keys()))
        raise EgressError(f"refused to send a train reply: tensor names differ from the server's "
                          f"(unknown {unknown[:3]}, missing {missing[:3]})")
    for name, array in sent.items():
        if tuple(array.shape) != tuple(agreed[name].shape):
            raise EgressError(f"refused to send a train reply: tensor {name!r} has shape "
                              f"{tuple(array.shape)}, the server's has {tuple(agreed[name].shape)}")
        if str(array.dtype) not in ALLOWED_DTYPES:
            raise EgressError(f"refused to send a train reply: tensor {name!r} has dtype "
                              f"{array.dtype}; only {sorted(ALLOWED_DTYPES)} may leave")


def _check_metrics(kind: str, metrics: object) -> None:
    if metrics is None:
        return
    if not isinstance(metrics, MetricRecord):
        raise EgressError(f"refused to send a {kind} reply: '{records.METRICS}' is not a MetricRecord")
    names = TRAIN_METRICS if kind == MessageType.TRAIN else EVALUATE_METRICS
    for name, value in metrics.items():
        if name not in names and not (kind == MessageType.EVALUATE and _RANKING_METRIC.fullmatch(name)):
            raise EgressError(f"refused to send a {kind} reply: metric {name!r} is not on the "
                              f"allow-list")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise EgressError(f"refused to send a {kind} reply: metric {name!r} must be one finite "
                              f"number, got a {type(value).__name__}")


def egress_guard(msg: Message, context: Context,
                 call_next: Callable[[Message, Context], Message]) -> Message:
    """Flower mod: run the handler, then let its reply out only if :func:`check_reply` passes;
    otherwise send an error reply (code :data:`EGRESS_REFUSED`) with none of the content."""
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    try:
        check_reply(msg, reply)
    except EgressError as err:
        log.error("%s", err)
        return Message(error=Error(code=EGRESS_REFUSED, reason=str(err)), reply_to=msg)
    return reply
