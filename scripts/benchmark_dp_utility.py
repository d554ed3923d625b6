"""Recommendation quality under DP on the real data: NDCG@10 / HR@10 at client epsilon 1, 3, 8
and without DP, and for each upload option (fp16 transport, FFA-LoRA); each setting over several
seeds (partition, initialisation and freshly built client stores; the DP noise itself always
comes from OS entropy).

Each run is one federated simulation (``privrec simulate`` with ``dp = "local"`` and that
``target-epsilon``, or with that upload option) on simulated devices with the default simulated
policy (delta 1e-5, exact evaluation, so the test metrics are exact); test metrics are those of
the best validation round, ranked by the clients themselves. Every DP run starts from fresh
ledgers. Results are saved after every run (``benchmarks/dp_utility.json``), and the "DP
utility" section of ``benchmarks/results.md`` is rewritten with mean and standard deviation.

    python scripts/benchmark_dp_utility.py --help
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.cli import build_config  # noqa: E402
from common.report_md import mean_std, replace_section  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "amazon-musical-instruments-2014"
OUT = ROOT / "benchmarks"
SECTION = "DP utility (issues 4 and 11)"
DP_RECIPE = ("dp-train", "dp-sample-rate", "dp-local-steps", "dp-learning-rate")  # how a DP row trained
STRICT_ROW = "epsilon 8, strict devices"
NEIGHBOURS_ROW = "no DP + on-device neighbours"  # the no-DP checkpoints rescored (--neighbours)  # the default real-device policy: evaluation noised and charged
log = logging.getLogger("benchmark")


def _stat(runs: list[dict], key: str) -> str:
    return mean_std([r["test"][key] for r in runs])


def render(results: dict) -> str:
    """The results.md section."""
    a = results["args"]
    d = results.get("defaults", {})
    lines = [f"Command: `python scripts/benchmark_dp_utility.py` (2-core CPU). Real data, {a['clients']} "
             f"clients (IID, about {1429 // a['clients']} users each), {a['rounds']} rounds, all clients every "
             f"round, {a['local_epochs']} local epoch(s), MiniLM; validation on {a['max_eval_users']} users, test "
             "on every user (full ranking) at the best validation round; mean ± standard deviation over the "
             "seeds listed (a seed sets the partition, the initialisation and a fresh build of the client "
             "stores; DP noise comes from OS entropy whatever the seed). Without DP: batch "
             f"{d.get('batch-size', 8)}, learning rate {d.get('learning-rate', 2e-3)}. DP: DP-SGD per client "
             f"(Opacus) training `dp-train` = {d.get('dp-train', 'item-bias')}, the unit is one user, Poisson "
             f"sampling at the public rate {d.get('dp-sample-rate', 1.0)}, {d.get('dp-local-steps')} steps per round, "
             f"Adam learning rate {d.get('dp-learning-rate', '-')}, max grad norm {d.get('max-grad-norm', 1.0)}, "
             "delta 1e-5 (the device policy's), noise calibrated by each device for the planned rounds, RDP "
             "accountant; every DP run starts from fresh ledgers. Upload bytes are per client per round as sent.",
             "", "| setting | recipe | seeds | epsilon spent (max client) | noise multiplier | best rounds | NDCG@10 "
             "| HR@10 | upload bytes | minutes (median) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, runs in sorted(results["runs"].items(), key=lambda kv: _order(kv[0])):
        r = runs[-1]
        eps = [x["epsilon"] for x in runs if x["epsilon"] is not None]
        lines.append(f"| {name} | {_recipe(r, name)} | {', '.join(str(x['seed']) for x in runs)} | "
                     f"{max(eps) if eps else '-'} | {r.get('noise-multiplier') or '-'} | "
                     f"{', '.join(str(x.get('best-round', '?')) for x in runs)} | {_stat(runs, 'ndcg@10')} | "
                     f"{_stat(runs, 'hr@10')} | {r.get('upload-bytes') or 0:,.0f} | "
                     f"{statistics.median(x['seconds'] for x in runs) / 60:.1f} |")
    base = results["runs"].get("no DP")
    if base:
        reference = statistics.mean(x["test"]["ndcg@10"] for x in base)
        lines.append("")
        for name, runs in sorted(results["runs"].items(), key=lambda kv: _order(kv[0])):
            if name != "no DP":
                mean = statistics.mean(x["test"]["ndcg@10"] for x in runs)
                lines.append(f"- {name}: **{mean / reference:.1%}** of the no-DP NDCG@10 (means).")
    lines += [f"- {name}, seed {r['seed']}: {r['note']}" for name, runs in results["runs"].items()
              for r in runs if r.get("note")]
    lines += ["- Epsilon 4 (issue 12) ran beside other benchmarks on the 2 cores, so its minutes are not comparable. "
              "Epsilon 2 and 0.5 were not run: at epsilon 3 and 1 per-client DP-SGD already scores at the untrained "
              "start (0.019-0.021; validation keeps round 0 in 3 of the 6 runs), which less budget cannot beat but "
              "by chance."]
    lines += ["- Targets (issue 4): at epsilon 8, >= 90% of no DP and above popularity (0.0380 on the same "
              "split, see Foundation).",
              "- Best round 0 means that no trained round beat the untrained model (the zero-shot start) on "
              "validation, so the test row scores the untrained model.",
              f"- {STRICT_ROW}: every device has the strict default policy, so each validation and test "
              "reply is noised (x5, Gaussian on the sums) and charged to the same epsilon 8, and the best round "
              "is chosen on noised validation; its NDCG@10 is the best checkpoint scored exactly by the "
              "benchmark (research only), the devices' own noised estimate is in `dp_utility.json` "
              "(`test-reported`).",
              "- Before issue 11 (one seed, delta 1/(10 x users on the client), noise from a seeded generator, "
              "training statistics sent): no DP 0.0458, epsilon 8 0.0314, epsilon 3 and 1 0.0212 (untrained).",
              "- Upload options without DP (issue 4, one seed, rows not re-run here: issue 11 did not touch "
              "them): fp16 480,264 B per client per round at NDCG@10 0.0458 (100% of that run's no DP), "
              "FFA-LoRA 909,072 B at 0.0440 (96%)."]
    return "\n".join(lines)


def _order(name: str) -> tuple:
    """No DP first, then epsilon rows from the largest epsilon, then the variants, as inserted."""
    match = re.fullmatch(r"epsilon ([0-9.]+)", name)
    return (0, 0.0) if name == "no DP" else (1, -float(match.group(1))) if match else (2, 0.0)


def _recipe(run: dict, name: str) -> str:
    """How a row was trained."""
    r = run.get("recipe") or {}
    if run.get("rescored-from"):
        return f"plain; best checkpoint rescored with the on-device neighbours (weight {r['personal-weight']:g})"
    if name.startswith("no DP"):
        return "plain"
    steps = f"{r['dp-local-steps']} steps" if r.get("dp-local-steps") else "1 epoch"
    return f"{r['dp-train']}, rate {r['dp-sample-rate']:g}, {steps}, lr {r['dp-learning-rate']:g}"


def exact_test(cfg, run: Path) -> dict:
    """Research only: the benchmark reads the review file itself and scores the run's best
    checkpoint exactly, where the devices' own (noised) test replies are only an estimate."""
    from common.recommender import Recommender
    from common.run_data import RunData

    data = RunData.load(cfg)
    recommender = Recommender(cfg, data.catalogue)
    recommender.load_checkpoint(run / "checkpoints" / "best")
    return recommender.evaluate(data.eval_users(cfg, "test"), data.split, target="test")


def rescore_with_neighbours(run: dict, weight: float) -> dict:
    """Research only: a saved no-DP run's best checkpoint scored exactly on the test items with each
    simulated device's on-device neighbours added (its partition's users play the device)."""
    from common.config import RunConfig

    folder = Path(run["run"])
    cfg = RunConfig.from_mapping(json.loads((folder / "config.json").read_text())).replace(personal_weight=weight)
    return {**run, "test": device_test(cfg, folder / "checkpoints" / "best"), "recipe": {**run["recipe"], "personal-weight": weight},
            "note": None, "rescored-from": str(folder)}


def device_test(cfg, checkpoint: Path | None = None) -> dict:
    """Research only: test metrics of ``checkpoint`` (default: the seeded initial model) over every
    user, each partition's users ranked as their device would (its own neighbours included)."""
    import numpy as np

    from common.metrics import summarise
    from common.recommender import Recommender
    from common.run_data import RunData
    from common.split import Split

    data = RunData.load(cfg)
    recommender = Recommender(cfg, data.catalogue)
    if checkpoint is not None:
        recommender.load_checkpoint(checkpoint)
    ranks = []
    for partition in range(cfg.num_clients):
        users = data.client_users(cfg, partition)
        device = Split(train={u: data.split.train[u] for u in users if u in data.split.train},
                       test={u: data.split.test[u] for u in users if u in data.split.test})
        ranks.extend(recommender.ranks(sorted(device.test), device, target="test"))
    return summarise(np.asarray(ranks), k=cfg.eval_k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--max-eval-users", type=int, default=300)
    parser.add_argument("--epsilons", type=float, nargs="*", default=[8.0, 3.0, 1.0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--no-uploads", action="store_true", help="skip the no-DP fp16 and FFA-LoRA upload runs")
    parser.add_argument("--no-strict", action="store_true",
                        help="skip epsilon 8 on strict devices (noised, charged evaluation)")
    parser.add_argument("--only", nargs="*", default=None,
                        help="run only these settings (e.g. 'no DP' 'epsilon 8'); keep the others' results")
    parser.add_argument("--render-only", action="store_true", help="rewrite results.md from the JSON")
    parser.add_argument("--neighbours", type=float, default=0.0, metavar="WEIGHT",
                        help="no training: rescore the saved no-DP runs' best checkpoints with the on-device "
                             "neighbours at this `personal-weight` (each partition's own users as its device)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    path = OUT / "dp_utility.json"
    if args.render_only or args.neighbours:
        results = json.loads(path.read_text())
        if args.neighbours:
            results["runs"][f"no DP + on-device neighbours (weight {args.neighbours:g})"] = [
                rescore_with_neighbours(r, args.neighbours) for r in results["runs"]["no DP"]]
            path.write_text(json.dumps(results, indent=2))
        replace_section(OUT / "results.md", SECTION, render(results))
        return
    from client.local_training import noise_for
    from client.policy import SIMULATED_DEVICE, PrivacyPolicy
    from client.simulated_devices import prepare_simulated_devices, reset_ledgers
    from common.recommender import planned_steps
    from server.simulation import simulate

    results = {"args": vars(args), "runs": {}}
    if args.only is not None and path.is_file():
        results["runs"] = json.loads(path.read_text())["runs"]
    settings = [("no DP", {"dp": "none"})] + [(f"epsilon {e:g}", {"dp": "local", "target_epsilon": e})
                                             for e in args.epsilons]
    if not args.no_strict:  # devices with the strict default policy: held-out reviews under the same epsilon
        settings.append((STRICT_ROW, {"dp": "local", "target_epsilon": 8.0}))
    if not args.no_uploads:
        settings += [("no DP, fp16 upload", {"upload_dtype": "float16"}),
                     ("no DP, FFA-LoRA", {"ffa_lora": True})]
    for name, changes in settings:
        if args.only is not None and name not in args.only:
            continue
        results["runs"][name] = []
        for seed in args.seeds:
            base = dict(reviews_path=str(DATA / "reviews.jsonl.gz"), items_path=str(DATA / "items.jsonl"),
                        num_clients=args.clients, num_rounds=args.rounds, local_epochs=args.local_epochs,
                        max_eval_users=args.max_eval_users, patience=0, min_train_clients=2, seed=seed,
                        run_dir=str(OUT / "runs"), stores_dir=str(OUT / "runs" / "stores"))
            cfg = build_config(None, [], **{**base, **changes})
            # Each DP run starts from fresh ledgers, as if on new devices: the ledgers persist by
            # design, and a ledger spent at epsilon 8 would (rightly) refuse an epsilon 1 run.
            prepare_simulated_devices(cfg)
            reset_ledgers(cfg, reason=f"benchmark: {name}, seed {seed}")
            settings_dict = cfg.to_dict()
            recipe = {k: settings_dict[k] for k in DP_RECIPE}
            results["defaults"] = {**recipe, **{k: settings_dict[k] for k in ("batch-size", "learning-rate",
                                                                            "max-grad-norm")}}
            policy = PrivacyPolicy() if name == STRICT_ROW else SIMULATED_DEVICE
            started = time.perf_counter()
            run = simulate(cfg, device_policy=policy, run_name=time.strftime(
                f"dp-utility-{re.sub('[^A-Za-z0-9]+', '-', name)}-s{seed}-%Y%m%d-%H%M%S"))
            summary = json.loads((run / "summary.json").read_text())
            rounds = [r for r in json.loads((run / "metrics.json").read_text()) if r.get("clients")]
            sigma = (cfg.noise_multiplier or noise_for(cfg, policy, planned_steps(0, cfg))
                     if cfg.dp == "local" else None)
            test = summary["test"] if policy.eval_noise_multiplier == 0 else exact_test(cfg, run)
            results["runs"][name].append({
                "seed": seed, "test": test, "test-reported": summary["test"],
                "seconds": time.perf_counter() - started,
                "epsilon": summary.get("epsilon-max") and round(summary["epsilon-max"], 3),
                "noise-multiplier": sigma and round(sigma, 3),
                "upload-bytes": rounds and rounds[-1]["upload-bytes-per-client"],
                "best-round": summary["best-round"], "recipe": recipe, "run": str(run)})
            path.write_text(json.dumps(results, indent=2))
            replace_section(OUT / "results.md", SECTION, render(results))
            log.info("%s, seed %d: %s", name, seed, results["runs"][name][-1])
    print(render(results))


if __name__ == "__main__":
    main()
