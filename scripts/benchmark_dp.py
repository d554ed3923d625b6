"""DP-SGD cost on one client (throughput and peak memory, DP against no DP), and upload sizes.

Both modes run side by side in one invocation, each in a fresh subprocess (so peak memory is
its own), on the same users of the real data, the same model (MiniLM, LoRA on the top layers),
batch size and number of steps. Prints a table and writes ``benchmarks/dp.json`` and the
"DP-SGD cost" section of ``benchmarks/results.md``. Examples/s is the median over repeats.

    python scripts/benchmark_dp.py --help
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "amazon-musical-instruments-2014"
log = logging.getLogger("benchmark")


def one_mode(mode: str, users: int, steps: int, batch: int) -> dict:
    """Train ``steps`` steps in this process; examples/s after one warm-up step, peak RSS."""
    import torch

    from client.dp_training import train_private
    from common.config import RunConfig
    from common.recommender import Recommender
    from common.run_data import RunData

    torch.manual_seed(0)
    # Like for like: DP-SGD trains the same tensors as plain training (`dp-train` = 'all') with
    # the same batch; the default 'item-bias' freezes the towers and costs far less than either.
    cfg = RunConfig(reviews_path=str(DATA / "reviews.jsonl.gz"), items_path=str(DATA / "items.jsonl"),
                    batch_size=batch, dp_sample_rate=batch / users, dp_train="all", device="cpu")
    data = RunData.load(cfg)
    chosen = random.Random(0).sample(data.split.users(), users)
    recommender = Recommender(cfg, data.catalogue)
    started = time.perf_counter()
    if mode == "dp":
        result, _ = train_private(recommender, chosen, data.split, steps=steps, noise_multiplier=1.0,
                                  max_grad_norm=1.0, sample_rate=cfg.dp_sample_rate)
    else:
        result = recommender.train(chosen, data.split, rng=random.Random(0), steps=steps)
    seconds = time.perf_counter() - started
    return {"mode": mode, "steps": result.steps, "examples": result.examples_seen, "seconds": seconds,
            "examples-per-second": result.examples_seen / seconds,
            "peak-rss-mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def upload_sizes() -> dict:
    """Bytes a client uploads per round (ArrayRecord payload) for each upload option, real catalogue."""
    import torch
    from flwr.app import ArrayRecord

    from common.config import RunConfig
    from common.model import build_model
    from common.run_data import load_catalogue

    cfg = RunConfig(reviews_path=str(DATA / "reviews.jsonl.gz"), items_path=str(DATA / "items.jsonl"))
    num_items = len(load_catalogue(cfg))
    out = {}
    for name, changes, dtype in (("fp32", {}, torch.float32), ("fp16", {}, torch.float16),
                                 ("FFA-LoRA fp32", {"ffa_lora": True}, torch.float32),
                                 ("FFA-LoRA fp16", {"ffa_lora": True}, torch.float16)):
        model = build_model(cfg.replace(**changes), num_items=num_items)
        state = {k: p.detach().to(dtype) for k, p in model.named_parameters() if p.requires_grad}
        out[name] = sum(len(a.data) for a in ArrayRecord(state).values())
        out["lora-bytes " + name] = sum(len(a.data) for k, a in ArrayRecord(state).items() if "lora_" in k)
    out["full model fp32"] = sum(p.numel() * 4 for p in build_model(cfg, num_items=num_items).parameters())
    return out


def render_uploads(sizes: dict) -> str:
    """The upload-size section."""
    full = sizes["full model fp32"]
    lines = ["Command: `python scripts/benchmark_dp.py --uploads-only`. Bytes of the ArrayRecord a client "
             "sends each round on the real catalogue (900 items), MiniLM, LoRA r=8 on query/value of the "
             "top 2 layers, projections, item vectors and item offsets. NDCG@10 for each option: see \"DP utility\" below.", "",
             "| upload | bytes per client per round | of which LoRA | vs full model |", "|---|---|---|---|"]
    for name in ("fp32", "fp16", "FFA-LoRA fp32", "FFA-LoRA fp16"):
        lines.append(f"| {name} | {sizes[name]:,} | {sizes['lora-bytes ' + name]:,} | "
                     f"{sizes[name] / full:.2%} |")
    lines.append(f"| full model (fp32) | {full:,} | | 100% |")
    return "\n".join(lines)


def render(results: dict) -> str:
    """The results.md section."""
    rows = results["rows"]
    med = {m: statistics.median(r["examples-per-second"] for r in rows if r["mode"] == m) for m in ("no-dp", "dp")}
    mem = {m: max(r["peak-rss-mib"] for r in rows if r["mode"] == m) for m in ("no-dp", "dp")}
    a = results["args"]
    lines = [f"Command: `python scripts/benchmark_dp.py` (2-core CPU). One client, {a['users']} real users, "
             f"MiniLM with LoRA on the top 2 layers, batch {a['batch']}, {a['steps']} steps, "
             f"{a['repeats']} repeats per mode, alternating; DP: `dp-train` = all (the same tensors as plain "
             "training), noise 1.0, clip 1.0, Poisson sampling (DP batches vary in size; examples/s counts the "
             "examples actually used). The default `dp-train` = item-bias freezes both towers (no backward "
             "pass through BERT), so this is DP's costlier case.", "",
             "| mode | examples/s (median) | peak RSS MiB |", "|---|---|---|",
             f"| no DP | {med['no-dp']:.2f} | {mem['no-dp']:.0f} |",
             f"| DP-SGD (Opacus hooks) | {med['dp']:.2f} | {mem['dp']:.0f} |", "",
             f"DP time overhead: **{med['no-dp'] / med['dp']:.2f}x** per example (target <= 1.3x)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200, help="users on the benchmark client")
    parser.add_argument("--steps", type=int, default=15, help="optimiser steps per measurement")
    parser.add_argument("--batch", type=int, default=8, help="batch size (expected, for DP)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per mode")
    parser.add_argument("--uploads-only", action="store_true", help="only measure upload sizes")
    parser.add_argument("--one", choices=["dp", "no-dp"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_mode(args.one, args.users, args.steps, args.batch)))
        return
    from common.report_md import replace_section

    out_dir = ROOT / "benchmarks"
    sizes = upload_sizes()
    (out_dir / "uploads.json").write_text(json.dumps(sizes, indent=2))
    replace_section(out_dir / "results.md", "Upload size per client per round (issue 4)", render_uploads(sizes))
    print(render_uploads(sizes))
    if args.uploads_only:
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rows = []
    for repeat in range(args.repeats):
        for mode in ("no-dp", "dp"):
            out = subprocess.run([sys.executable, __file__, "--one", mode, "--users", str(args.users),
                                  "--steps", str(args.steps), "--batch", str(args.batch)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            log.info("repeat %d %s: %.2f examples/s, peak %.0f MiB", repeat, mode,
                     rows[-1]["examples-per-second"], rows[-1]["peak-rss-mib"])
    results = {"args": vars(args), "rows": rows}
    (out_dir / "dp.json").write_text(json.dumps(results, indent=2))
    body = render(results)
    replace_section(out_dir / "results.md", "DP-SGD cost (issue 4)", body)
    print(body)


if __name__ == "__main__":
    main()
