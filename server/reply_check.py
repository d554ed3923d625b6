"""Every training reply is checked before it is aggregated: a client may crash, run old code, or lie.

A reply is used only if it holds exactly the tensors the server sent (same names and shapes), in a
float dtype that may travel (``records.TENSOR_DTYPES``), every value finite, a change to the global
tensors no larger than ``max-update-norm`` in L2 (with ``dp`` = 'central', the clipping norm the
clients were asked to apply), and a finite positive aggregation weight. A reply that fails is
dropped with its reason logged; the round goes on with the others while at least
``min-train-clients`` remain.
"""

from __future__ import annotations

import math

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord

from common import records

NORM_SLACK = 1.0 + 1e-4  # float32 rounding of a clipped update


class ReplyCheck:
    """What a round's replies must look like, given the global tensors ``sent``."""

    def __init__(self, sent: ArrayRecord, *, weight_key: str, max_update_norm: float = 0.0) -> None:
        self.sent = {name: array.numpy().astype(np.float64) for name, array in sent.items()}
        self.weight_key, self.max_update_norm = weight_key, max_update_norm

    def reason(self, reply: Message) -> str | None:
        """Why ``reply`` cannot be aggregated, or None when it can."""
        content = reply.content
        arrays = content.get(records.ARRAYS)
        if not isinstance(arrays, ArrayRecord):
            return f"it holds no ArrayRecord '{records.ARRAYS}'"
        missing, unknown = sorted(set(self.sent) - set(arrays)), sorted(set(arrays) - set(self.sent))
        if missing:
            return f"{len(missing)} tensor(s) missing, e.g. {missing[0]!r}"
        if unknown:
            return f"{len(unknown)} tensor(s) the server did not send, e.g. {unknown[0]!r}"
        squared = 0.0
        for name, array in arrays.items():
            expected = self.sent[name].shape
            if tuple(array.shape) != expected:
                return f"tensor {name!r} has shape {tuple(array.shape)}, expected {expected}"
            if str(array.dtype) not in records.TENSOR_DTYPES:
                return f"tensor {name!r} has dtype {array.dtype}, expected one of {sorted(records.TENSOR_DTYPES)}"
            values = array.numpy().astype(np.float64)
            if not np.isfinite(values).all():
                return f"tensor {name!r} has non-finite values"
            squared += float(np.sum((values - self.sent[name]) ** 2))
        norm = math.sqrt(squared)
        if self.max_update_norm and norm > self.max_update_norm * NORM_SLACK:
            return f"its update has L2 norm {norm:.3g}, above the bound {self.max_update_norm:g}"
        metrics = content.get(records.METRICS)
        weight = metrics.get(self.weight_key) if isinstance(metrics, MetricRecord) else None
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            return f"its weight '{self.weight_key}' is missing or not a finite positive number"
        return None
