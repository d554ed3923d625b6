"""What one client uploads per round as the catalogue grows: 900 items (the real data) and 100,000
(synthetic), per DP mode, against the full model (issue 14, item 5).

* ``none``, ``local``, ``central``: every exchanged tensor (LoRA, projections, per-item vectors and
  offsets), float32, counted from the model the default settings build for that catalogue size;
* ``distributed`` (the default): one SecAgg+ release of the counts (and, with ``release-ratings``,
  the rating sums): Flower's masked vector holds 8 bytes per entry plus the protocol's keys and
  shares, whose size does not depend on the catalogue; that constant is the measured 900-item
  payload (``benchmarks/secagg.json``, counts only) less its 8-byte entries.

Writes ``benchmarks/catalogue_scale.json`` and a section of ``results.md``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.report_md import replace_section  # noqa: E402

OUT = ROOT / "benchmarks"
SECTION = "Upload and catalogue size (issue 14)"
SIZES = (900, 100_000)
ENTRY_BYTES = 8  # SecAgg+ sends the masked, quantised vector as int64


def model_bytes(num_items: int) -> tuple[int, int]:
    """(exchanged tensor bytes, full model bytes) of the default model over ``num_items`` items."""
    from common.config import RunConfig
    from common.model import build_model, trainable_state

    model = build_model(RunConfig(dp="none"), num_items=num_items)
    exchanged = sum(t.numel() * t.element_size() for t in trainable_state(model).values())
    full = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return exchanged, full


def secagg_bytes(length: int) -> int:
    """One device's SecAgg+ payload for a released vector of ``length`` entries."""
    measured = json.loads((OUT / "secagg.json").read_text())
    row = next(r for r in measured["rows"] if r["statistic"] == "item-counts" and r["mode"] == "on")
    protocol = row["bytes"] - ENTRY_BYTES * (row["size"] + 1)  # +1: the weight entry Flower prepends
    return int(protocol + ENTRY_BYTES * (length + 1))


def main() -> None:
    rows = []
    for size in SIZES:
        exchanged, full = model_bytes(size)
        rows.append({"items": size, "mode": "none / local / central (tensors)", "bytes": exchanged, "full": full})
        for label, length in (("distributed, counts only", size), ("distributed, counts + ratings (default)", 2 * size)):
            rows.append({"items": size, "mode": label, "bytes": secagg_bytes(length), "full": full})
    (OUT / "catalogue_scale.json").write_text(json.dumps(rows, indent=1))
    lines = ["Measured with `python scripts/benchmark_catalogue_scale.py` (bytes per client per round; the "
             "distributed rows extrapolate the measured 900-item SecAgg+ payload by Flower's 8 bytes per entry).", "",
             "| items | mode | upload | full model | smaller by |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['items']:,} | {r['mode']} | {r['bytes'] / 1e6:.3f} MB | {r['full'] / 1e6:.1f} MB | "
                     f"{r['full'] / r['bytes']:.0f}x |")
    replace_section(OUT / "results.md", SECTION, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
