"""What one client uploads per round as the catalogue grows: 900 items (the real data) and 100,000
(synthetic), per DP mode, against the full model (issue 14, item 5).

* ``none``, ``local``, ``central``: every exchanged tensor (LoRA, projections, per-item vectors and
  offsets), counted from the model the settings build for that catalogue size: one row per item
  (``item-table-width`` 0, as before issue 14), the default (one row per item up to 8192 items,
  8192 hashed rows beyond), and the default with a float16 upload and FFA-LoRA;
* ``distributed`` (the default): one SecAgg+ release of the counts (and, with ``release-ratings``,
  the rating sums), each exact up to ``release-width`` items and a count sketch of that width
  beyond: Flower's masked vector holds 8 bytes per entry plus the protocol's keys and shares,
  whose size does not depend on the catalogue; that constant is the measured 900-item payload
  (``benchmarks/secagg.json``, counts only) less its 8-byte entries.

It also measures what the sketch costs the released prior's ranking at 100,000 items, and
(``--tables RUN ...``) what sharing rows costs the trained item vectors and offsets: the real
catalogue's 900 items on 74 hashed rows (the load 100,000 items put on 8192), as the least-squares
projection of no-DP runs' trained tables onto them, rescored on the test split. A projection, not a
run trained on hashed rows (that would cost a federated training run per seed).

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


TENSOR_MODES = {  # row label -> settings
    "none / local / central, one row per item": {"item_table_width": 0},
    "none / local / central (default: item-table-width 8192)": {},
    "none / local / central, default + float16 upload + FFA-LoRA": {"upload_dtype": "float16", "ffa_lora": True},
}


def model_bytes(num_items: int, dp: str = "none", **settings) -> tuple[int, int]:
    """(exchanged tensor bytes, full model bytes) of the model ``settings`` build over ``num_items`` items."""
    from common.config import RunConfig
    from common.model import build_model, trainable_state

    cfg = RunConfig(dp=dp, **settings)
    model = build_model(cfg, num_items=num_items)
    per_entry = 2 if cfg.upload_dtype == "float16" else 4
    exchanged = sum(t.numel() * per_entry for t in trainable_state(model).values())
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


def table_quality(runs: list[Path], widths: list[int]) -> dict[str, list[dict]]:
    """Test metrics of each run's best checkpoint with exact tables and with their projection onto
    each of ``widths`` hashed rows (text only, and text + prior + on-device neighbours)."""
    import tempfile

    import torch

    from common.config import RunConfig
    from common.model import hashed_rows, save_checkpoint
    from common.recommender import Recommender
    from common.run_data import RunData
    from scripts.benchmark_recommender import device_parts

    out: dict[str, list[dict]] = {}
    for run in runs:
        cfg = RunConfig.from_mapping(json.loads((run / "config.json").read_text()))
        data = RunData.load(cfg)
        users, parts = device_parts(cfg, data, run / "checkpoints" / "best", 1.0)
        out.setdefault("exact", []).append(_fused(parts, users, data))
        for width in widths:
            recommender = Recommender(cfg, data.catalogue)
            recommender.load_checkpoint(run / "checkpoints" / "best")
            rows = hashed_rows(len(data.catalogue), width)
            shared = torch.zeros(len(data.catalogue), width)
            shared[torch.arange(len(data.catalogue)), rows[0]] += 1
            shared[torch.arange(len(data.catalogue)), rows[1]] += 1
            with torch.no_grad():
                for table in (recommender.model.item_embedding.weight, recommender.model.item_bias.weight):
                    exact = table.reshape(len(data.catalogue), -1)
                    table.copy_((shared @ torch.linalg.lstsq(shared, exact).solution).reshape(table.shape))
            with tempfile.TemporaryDirectory() as tmp:
                save_checkpoint(recommender.model, Path(tmp), meta={})
                users, parts = device_parts(cfg, data, Path(tmp), 1.0)
            out.setdefault(f"{width} hashed rows ({len(data.catalogue) / width:.1f} items per row)", []).append(
                _fused(parts, users, data))
    return out


def _fused(parts: dict, users: list[str], data) -> dict:
    from scripts.benchmark_augmentation import FUSIONS
    from scripts.benchmark_recommender import _metrics

    return {name: _metrics(sum(w * parts[p] for p, w in recipe.items()), users, data, "test")
            for name, recipe in FUSIONS.items()}


def main() -> None:
    import argparse

    from common.sketch import ReleaseLayout

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads-only", action="store_true", help="keep the prior's measured NDCG from the JSON")
    parser.add_argument("--tables", nargs="+", type=Path, default=None, metavar="RUN",
                        help="no-DP run directories whose tables to project onto hashed rows")
    parser.add_argument("--table-widths", type=int, nargs="+", default=[74, 300],
                        help="hashed rows to project the 900 items onto (74: the load of 100,000 items on 8192)")
    args = parser.parse_args()
    rows, width = [], 8192
    for size in SIZES:
        for label, settings in TENSOR_MODES.items():
            exchanged, full = model_bytes(size, **settings)
            rows.append({"items": size, "mode": label, "bytes": exchanged, "full": full})
        length = ReleaseLayout(tuple(map(str, range(size))), width).length
        full = model_bytes(size, dp="distributed")[1]  # its tables stay exact: they never travel
        for label, entries in (("distributed, counts only", length), ("distributed, counts + ratings (default)", 2 * length)):
            rows.append({"items": size, "mode": label, "bytes": secagg_bytes(entries), "full": full})
    path = OUT / "catalogue_scale.json"
    if args.uploads_only:
        quality = {int(k): v for k, v in json.loads(path.read_text())["prior-ndcg@10"].items()}
    else:
        quality = {size: prior_quality(size, [0, 1, 2]) for size in SIZES}
    previous = json.loads(path.read_text()) if path.exists() else {}
    tables = (table_quality(args.tables, args.table_widths) | {"runs": [str(r) for r in args.tables]}
              if args.tables else previous.get("tables"))
    path.write_text(json.dumps({"uploads": rows, "prior-ndcg@10": quality, "tables": tables}, indent=1))
    lines = ["Measured with `python scripts/benchmark_catalogue_scale.py` (bytes per client per round; the "
             "distributed rows extrapolate the measured 900-item SecAgg+ payload by Flower's 8 bytes per entry). "
             "Where tensors travel, the per-item vectors and offsets stop growing at `item-table-width` rows: past it "
             "each item reads the sum of two of 8192 shared rows (two public hashes of its catalogue row; "
             "`common/model.py`); what stays is LoRA and the two projections (0.49 MB in float32, 0.22 MB with "
             "float16 and FFA-LoRA), so those modes cannot reach 500x, which only the default release does.", "",
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
    if tables:
        lines += ["", "What sharing rows costs the trained tables: the 900 real items on fewer hashed rows (74 rows "
                  "carry the load of 100,000 items on the default 8192), as the least-squares projection of the no-DP runs' trained "
                  f"item vectors and offsets ({len(tables['runs'])} seed(s) of `benchmark_augmentation.py`'s 'none' "
                  "row), test split:", "", "| tables | text only: NDCG@10 | text + prior + neighbours: NDCG@10 |",
                  "|---|---|---|"]
        for label, runs in tables.items():
            if label != "runs":
                lines.append(f"| {label} | {mean_std([r['text only']['ndcg@10'] for r in runs])} | "
                             f"{mean_std([r['text + prior + neighbours']['ndcg@10'] for r in runs])} |")
    replace_section(OUT / "results.md", SECTION, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
