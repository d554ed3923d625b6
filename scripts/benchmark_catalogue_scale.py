"""What one client uploads per round as the catalogue grows: 900 items (the real data) and 100,000
(synthetic), per DP mode, against the full model (issue 14, item 5).

* ``none``, ``local``, ``central``: every exchanged tensor (LoRA, projections, per-item vectors and
  offsets), float32, counted from the model the default settings build for that catalogue size;
* ``distributed`` (the default): one SecAgg+ release of the counts (and, with ``release-ratings``,
  the rating sums), each exact up to ``release-width`` items and a count sketch of that width
  beyond: Flower's masked vector holds 8 bytes per entry plus the protocol's keys and shares,
  whose size does not depend on the catalogue; that constant is the measured 900-item payload
  (``benchmarks/secagg.json``, counts only) less its 8-byte entries.

It also measures what the sketch costs the released prior's ranking at 100,000 items.

Writes ``benchmarks/catalogue_scale.json`` and a section of ``results.md``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from common.report_md import mean_std, replace_section  # noqa: E402

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


def synthetic_catalogue(size: int, real):
    """The real catalogue plus made-up items up to ``size`` (items nobody reviewed)."""
    from common.catalogue import Catalogue
    from common.schema import Item

    made_up = {f"SYN{n:07d}": Item(f"SYN{n:07d}", f"synthetic item {n}") for n in range(size - len(real))}
    return Catalogue({**real.items, **made_up})


def prior_quality(size: int, seeds: list[int]) -> dict[str, list[float]]:
    """Test NDCG@10 on the real data's warm users of the released popularity prior alone (epsilon 8,
    counts and ratings in the release, as the devices compute it) ranked over ``size`` items: the real
    900 and unreviewed synthetic ones, the release exact (as wide as the catalogue) or sketched at
    the default width."""
    from client.secure_release import item_counts, noise_share, sensitivity
    from common import records
    from common.config import RunConfig
    from common.federation_dp import release_noise
    from common.metrics import summarise, target_rank
    from common.run_data import RunData
    from common.sketch import ReleaseLayout

    data_dir = ROOT.parent / "shared" / "data" / "amazon-musical-instruments-2014"
    cfg = RunConfig(reviews_path=str(data_dir / "reviews.jsonl.gz"), items_path=str(data_dir / "items.jsonl"))
    data = RunData.load(cfg)
    catalogue = synthetic_catalogue(size, data.catalogue)
    users = sorted(data.split.test)
    everyone = SimpleNamespace(users=users, split=data.split, catalogue=catalogue)  # one device
    out = {}
    for label, width in (("exact", len(catalogue)), ("sketch", cfg.release_width)):
        wide = cfg.replace(release_width=width)
        layout = ReleaseLayout(catalogue.ids, width)
        vector = item_counts(everyone, cfg.release_recent_items, ratings=True, width=width)
        std = release_noise(wide) * sensitivity(records.RELEASE_ITEM_COUNTS, wide, catalogue.ids)
        for _ in seeds:
            prior = layout.decode((vector + noise_share(vector.shape, std))[:layout.length])
            ranks = [target_rank(prior, catalogue.index[data.split.test[u].item_id],
                                 catalogue.rows(r.item_id for r in data.split.train[u])) for u in users]
            out.setdefault(label, []).append(summarise(np.asarray(ranks), k=10)["ndcg@10"])
    return out


def main() -> None:
    from common.sketch import ReleaseLayout

    rows, width = [], 8192
    for size in SIZES:
        exchanged, full = model_bytes(size)
        rows.append({"items": size, "mode": "none / local / central (tensors)", "bytes": exchanged, "full": full})
        length = ReleaseLayout(tuple(map(str, range(size))), width).length
        for label, entries in (("distributed, counts only", length), ("distributed, counts + ratings (default)", 2 * length)):
            rows.append({"items": size, "mode": label, "bytes": secagg_bytes(entries), "full": full})
    quality = {size: prior_quality(size, [0, 1, 2]) for size in SIZES}
    (OUT / "catalogue_scale.json").write_text(json.dumps({"uploads": rows, "prior-ndcg@10": quality}, indent=1))
    lines = ["Measured with `python scripts/benchmark_catalogue_scale.py` (bytes per client per round; the "
             "distributed rows extrapolate the measured 900-item SecAgg+ payload by Flower's 8 bytes per entry).", "",
             "| items | mode | upload | full model | smaller by |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['items']:,} | {r['mode']} | {r['bytes'] / 1e6:.3f} MB | {r['full'] / 1e6:.1f} MB | "
                     f"{r['full'] / r['bytes']:.0f}x |")
    lines += ["", f"Past `release-width` ({width}) entries per statistic the release is a count sketch (3 rows, "
              "median read-back; `common/sketch.py`). What that costs: test NDCG@10 of the epsilon-8 released prior "
              "alone (counts + ratings) on the real data's warm users, ranked over the real 900 items plus unreviewed "
              "synthetic ones, 3 noise draws:", "", "| items | exact release | sketch |", "|---|---|---|"]
    for size, q in quality.items():
        lines.append(f"| {size:,} | {mean_std(q['exact'])} | {mean_std(q['sketch'])} |")
    replace_section(OUT / "results.md", SECTION, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
