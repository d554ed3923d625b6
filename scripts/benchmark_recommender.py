"""Benchmark the recommender against reference recommenders on warm and cold-start users (issue 14).

Real data (../shared/data), leave-last-out, full ranking, test split, every user; mean ± std over
seeds (deterministic rows have none). Warm users:

* reference recommenders, centralised and without DP: popularity (all-time, and over each user's
  2 latest items), item-kNN, EASE, BPR-MF, a SASRec-style sequential model;
* the zero-shot text ranker, and PrivRec's federated checkpoints (no DP; distributed DP at epsilon 8)
  rescored part by part as each device would score its own users (``common/fusion.py``): text,
  + prior, + on-device neighbours, + attribute preferences (weight picked on validation), with
  low-rated reviews counting or not. The checkpoints come from earlier benchmark runs
  (``benchmark_dp_utility.py`` "no DP", ``benchmark_federation_dp.py --keep`` epsilon 8).

Cold-start users: per seed, 20% of users are held out of everything (training, release, neighbours);
the model sees only their first 1 or 2 reviews (or the first review's one-line summary, as a
description) and ranks their later items (NDCG@10 with each later item relevant). The released prior is simulated exactly: the same clipped counts over the other
users plus the same Gaussian noise the federation's devices add at epsilon 8 (with the ratings in
the release, sensitivity sqrt(2k)).

Star ratings: RMSE and MAE on the test reviews (see :func:`rating_rows`).

Writes ``benchmarks/recommender.json`` and the "Recommender: warm and cold-start users (issue 14)"
section of results.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.cli import setup_logging  # noqa: E402
from common.report_md import mean_std, replace_section  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "amazon-musical-instruments-2014"
OUT = ROOT / "benchmarks"
SECTION = "Recommender: warm and cold-start users (issue 14)"
ATTRIBUTE_WEIGHTS = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0)
LOW_RATING_WEIGHTS = (1.0, 0.0)
BPR_GRID = ((1e-3, 0.03), (1e-3, 0.1), (3e-3, 0.1))  # (learning rate, L2), picked on validation
COLD_HELD_OUT = 0.2
K = 10
log = logging.getLogger("benchmark")


def _config(**changes):
    from common.config import RunConfig

    return RunConfig(reviews_path=str(DATA / "reviews.jsonl.gz"), items_path=str(DATA / "items.jsonl"),
                     num_clients=10, **changes)


def _metrics(scores: np.ndarray, users: list[str], data, target: str) -> dict[str, float]:
    from common.baselines import evaluate_scores

    return evaluate_scores(scores, users, data.split, data.catalogue, target=target, k=K)


def _both(scores: np.ndarray, users: list[str], data) -> dict:
    valid_users = [u for u in users if u in data.split.valid]
    rows = [users.index(u) for u in valid_users]
    return {"valid": _metrics(scores[rows], valid_users, data, "valid"), "test": _metrics(scores, users, data, "test")}


def reference_rows(data, seeds: list[int]) -> dict[str, list[dict]]:
    """Popularity, recency popularity, item-kNN, EASE (deterministic) and BPR-MF, SASRec (per seed)."""
    from common.baselines import (EASE_LAMBDAS, ease_weights, item_knn_weights, popularity_scores,
                                  recent_popularity_scores)
    from common.learned_baselines import bpr_mf, sasrec

    split, catalogue = data.split, data.catalogue
    users = sorted(split.test)
    x = catalogue.interactions([split.train.get(u, []) for u in users])
    rows = {"popularity (all-time)": [_both(np.tile(popularity_scores(split, catalogue), (len(users), 1)), users, data)],
            "popularity (each user's 2 latest items)": [
                _both(np.tile(recent_popularity_scores(split, catalogue, 2), (len(users), 1)), users, data)],
            "item-kNN (cosine)": [_both(x @ item_knn_weights(x), users, data)]}
    ease = [_both(x @ ease_weights(x, lam), users, data) for lam in EASE_LAMBDAS]
    rows["EASE"] = [max(ease, key=lambda r: r["valid"][f"ndcg@{K}"])]
    rows["BPR-MF"], rows["SASRec-style"] = [], []
    for seed in seeds:
        started = time.perf_counter()
        tried = [_both(bpr_mf(split, users, catalogue, seed=seed, lr=lr, reg=reg), users, data) for lr, reg in BPR_GRID]
        rows["BPR-MF"].append(max(tried, key=lambda r: r["valid"][f"ndcg@{K}"]))
        rows["SASRec-style"].append(_both(sasrec(split, users, catalogue, seed=seed), users, data))
        log.info("seed %d: BPR-MF and SASRec in %.0f s", seed, time.perf_counter() - started)
    return rows


def device_parts(cfg, data, checkpoint: Path | None, low_rating_weight: float) -> tuple[list[str], dict[str, np.ndarray]]:
    """Every test user's score parts at unit weights, each partition's users scored as their device
    would (its own neighbours); ``checkpoint`` None = the zero-shot model."""
    from common.recommender import Recommender
    from common.split import Split

    cfg = cfg.replace(personal_weight=1.0, attribute_weight=1.0, low_rating_weight=low_rating_weight)
    recommender = Recommender(cfg, data.catalogue)
    if checkpoint is not None:
        recommender.load_checkpoint(checkpoint)
    users, parts = [], {}
    for partition in range(cfg.num_clients):
        members = data.client_users(cfg, partition)
        device = Split(train={u: data.split.train[u] for u in members if u in data.split.train})
        scored = sorted(u for u in members if u in data.split.test)
        for name, part in recommender.score_parts(scored, device).items():
            parts.setdefault(name, []).append(np.asarray(part))
        users += scored
    return users, {name: np.concatenate(chunks) for name, chunks in parts.items()}


FUSIONS = {  # row -> the parts it adds, with weights ("auto-neighbours" = the mode's measured weight)
    "text only": {"text": 1},
    "text + prior": {"text": 1, "prior": 1},
    "text + prior + neighbours": {"text": 1, "prior": 1, "neighbours": "auto"},
    "text + prior + attributes": {"text": 1, "prior": 1, "attributes": "pick"},
    "text + prior + neighbours + attributes": {"text": 1, "prior": 1, "neighbours": "auto", "attributes": "pick"},
}


def model_rows(label: str, runs: list[Path | None], data) -> dict[str, list[dict]]:
    """The fusion rows of one kind of checkpoint, one entry per run (seed)."""
    from common.config import RunConfig

    rows: dict[str, list[dict]] = {}
    for run in runs:
        cfg = (RunConfig.from_mapping(json.loads((run / "config.json").read_text())) if run else _config(dp="distributed"))
        checkpoint = run / "checkpoints" / "best" if run else None
        auto = cfg.replace(personal_weight=-1.0).neighbour_weight
        for low in LOW_RATING_WEIGHTS:
            started = time.perf_counter()
            users, parts = device_parts(cfg, data, checkpoint, low)
            log.info("%s seed %d, low-rating weight %g: parts in %.0f s", label, cfg.seed, low, time.perf_counter() - started)
            for name, recipe in FUSIONS.items():
                if any(p not in parts for p in recipe if p != "attributes") or (run is None and "prior" in recipe):
                    continue
                tried = []
                for weight in (ATTRIBUTE_WEIGHTS[1:] if recipe.get("attributes") == "pick" else (0.0,)):
                    weights = {p: (auto if w == "auto" else weight if w == "pick" else w) for p, w in recipe.items()}
                    scores = sum(w * parts[p] for p, w in weights.items())
                    tried.append({**_both(scores, users, data), "weights": weights, "seed": cfg.seed,
                                  "run": str(run) if run else None})
                row = f"{label}: {name}" + ("" if low == 1.0 else ", low ratings ignored")
                rows.setdefault(row, []).append(max(tried, key=lambda r: r["valid"][f"ndcg@{K}"]))
    return rows


def cold_start(data, seeds: list[int], first: tuple[int, ...] = (1, 2)) -> dict[str, list[dict]]:
    """Held-out users ranked from their first reviews: popularity vs the zero-shot model with the
    simulated epsilon-8 release of the other users' counts, with and without attribute preferences."""
    from client.secure_release import noise_share
    from common.baselines import popularity_scores, recent_popularity_scores
    from common.federation_dp import release_noise
    from common.fusion import history_matrix, unit
    from common.metrics import relevant_set_metrics
    from common.personal import TextNeighbours
    from common.recommender import Recommender
    from common.split import Split
    from server.secure_release import popularity_prior

    cfg = _config(dp="distributed", target_epsilon=8.0)
    catalogue = data.catalogue
    recommender = Recommender(cfg, catalogue)
    text_neighbours = TextNeighbours(recommender.items.pooled)
    everything = _by_user(data)
    everyone = sorted(everything)
    rows: dict[str, list[dict]] = {}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        held = set(rng.choice(everyone, int(COLD_HELD_OUT * len(everyone)), replace=False).tolist())
        warm = Split(train={u: data.split.train[u] for u in everyone if u not in held})
        popular = popularity_scores(warm, catalogue)
        counts = recent_popularity_scores(warm, catalogue, cfg.release_recent_items)
        sigma = release_noise(cfg) * np.sqrt(2 * cfg.release_recent_items)  # counts and ratings: sqrt(2k)
        prior = popularity_prior(counts + noise_share(counts.shape, sigma), cfg.prior_strength)
        histories = {u: everything[u] for u in sorted(held)}
        for n in first:
            users = [u for u, h in histories.items() if len(h) > n]
            profiles = [histories[u][:n] for u in users]
            text = recommender.text_parts([_profile(recommender, p) for p in profiles])["text"]
            history = history_matrix(catalogue, profiles)
            attributes = recommender.attributes.scores(history)
            similar = unit(text_neighbours(history))
            candidates = {
                "popularity (other users, all-time)": np.tile(popular, (len(users), 1)),
                "popularity (other users, 2 latest items)": np.tile(counts, (len(users), 1)),
                "zero-shot text": text,
                "zero-shot text + released prior (epsilon 8)": text + prior,
                "zero-shot text + released prior + attributes": text + prior + attributes,
                "zero-shot text + released prior + items like theirs (text neighbours)": text + prior + 4 * similar,
            }
            if n == 1:  # a one-line description instead of a review: the first review's summary line, as
                # `privrec recommend --text` would take it (no item named, no stars)
                lines = recommender.text_parts([histories[u][0].summary or "something good" for u in users])["text"]
                candidates["one-line description (first summary) + released prior"] = lines + prior
            for name, scores in candidates.items():
                per_user = [relevant_set_metrics(scores[r], catalogue.rows(x.item_id for x in histories[u][n:]),
                                                 catalogue.rows(x.item_id for x in profiles[r]), k=K)
                            for r, u in enumerate(users)]
                rows.setdefault(f"first {n} review{'s' if n > 1 else ''}: {name}", []).append(
                    {"test": {m: float(np.mean([p[m] for p in per_user])) for m in per_user[0]}, "seed": seed,
                     "users": len(users)})
        log.info("cold start seed %d done", seed)
    return rows


def rating_rows(data, seeds: list[int]) -> dict[str, list[dict]]:
    """RMSE and MAE of star predictions on every user's test review (and validation, to pick the
    shrinkages): global mean, user mean, item mean, user + item biases (exact, centralised) and
    PrivRec's released item offsets on the device's user mean, the release simulated exactly (same
    clip, same noise as the devices add at epsilon 8) with one noise draw per seed."""
    from client.secure_release import item_counts as device_release, noise_share, sensitivity
    from common import records
    from common.federation_dp import release_noise
    from common.ratings import errors, item_offsets, user_mean

    cfg = _config(dp="distributed", target_epsilon=8.0)
    split, catalogue = data.split, data.catalogue
    users = sorted(split.test)
    train = [r for u in users for r in split.train[u]]
    mu = float(np.mean([r.rating for r in train]))
    rows = {u: n for n, u in enumerate(users)}

    def score(predict) -> dict:
        out = {}
        for target in ("valid", "test"):
            held = [(u, getattr(split, target)[u]) for u in users if u in getattr(split, target)]
            out[target] = errors([predict(u, r.item_id) for u, r in held], [r.rating for _, r in held])
        return out

    def picked(candidates: dict) -> dict:
        name, best = min(((k, score(f)) for k, f in candidates.items()), key=lambda kv: kv[1]["valid"]["rmse"])
        return {**best, "weights": {"picked": name}}

    item_sums, item_counts = np.zeros(len(catalogue)), np.zeros(len(catalogue))
    for r in train:
        item_sums[catalogue.index[r.item_id]] += r.rating - mu
        item_counts[catalogue.index[r.item_id]] += 1
    out = {"global mean": [score(lambda u, i: mu)],
           "user mean": [picked({f"beta {b:g}": (lambda u, i, b=b: user_mean(split.train[u], mu, b)) for b in (0, 2, 5, 10, 20)})],
           "item mean": [picked({f"lambda {lam:g}": (lambda u, i, lam=lam: mu + item_sums[catalogue.index[i]] / (item_counts[catalogue.index[i]] + lam))
                                 for lam in (2, 5, 10, 20, 50)})]}
    bias_u, bias_i = np.zeros(len(users)), np.zeros(len(catalogue))
    for _ in range(10):  # user + item biases by alternating ridge regression (regularisation 5 and 2)
        residual_i = np.zeros(len(catalogue))
        for r in train:
            residual_i[catalogue.index[r.item_id]] += r.rating - mu - bias_u[rows[r.user_id]]
        bias_i = residual_i / (item_counts + 5.0)
        bias_u = np.array([sum(r.rating - mu - bias_i[catalogue.index[r.item_id]] for r in split.train[u])
                           / (len(split.train[u]) + 2.0) for u in users])
    out["user + item biases"] = [score(lambda u, i: float(np.clip(mu + bias_u[rows[u]] + bias_i[catalogue.index[i]], 1, 5)))]
    # The release, as the devices compute it (all users as one device): counts, then rating sums.
    released = device_release(SimpleNamespace(users=users, split=split, catalogue=catalogue),
                              cfg.release_recent_items, ratings=True)
    counts, sums = released[:len(catalogue)], released[len(catalogue):]
    sigma = release_noise(cfg) * sensitivity(records.RELEASE_ITEM_COUNTS, cfg, catalogue.ids)
    for label, draws in (("PrivRec: released item offsets + on-device user mean, no noise", [0.0]),
                         ("PrivRec: released item offsets + on-device user mean (epsilon 8)", [sigma] * len(seeds))):
        for n, std in enumerate(draws):
            noised_counts = counts + noise_share(counts.shape, std) if std else counts
            noised_sums = sums + noise_share(sums.shape, std) if std else sums
            tried = {}
            for lam in (5, 10, 20, 50, 100):
                offsets, mean = item_offsets(noised_counts, noised_sums, lam)
                for beta in (2, 5, 10, 20):
                    tried[f"lambda {lam:g}, beta {beta:g}"] = (lambda u, i, o=offsets, m=mean, b=beta: float(np.clip(
                        user_mean(split.train[u], m, b) + o[catalogue.index[i]], 1, 5)))
            out.setdefault(label, []).append({**picked(tried), "seed": n})
    return out


def rating_release_cost(data, seeds: list[int]) -> dict[str, list[dict]]:
    """What carrying the ratings in the release costs the ranking: test NDCG@10 of the zero-shot text
    plus the released prior, the counts noised for sensitivity sqrt(k) (counts only) or sqrt(2k)
    (counts and ratings), one noise draw per seed."""
    from client.secure_release import noise_share
    from common.baselines import recent_popularity_scores
    from common.federation_dp import release_noise
    from common.recommender import Recommender
    from common.split import Split
    from server.secure_release import popularity_prior

    cfg = _config(dp="distributed", target_epsilon=8.0)
    users = sorted(data.split.test)
    text = Recommender(cfg, data.catalogue).score_parts(users, Split(train=data.split.train))["text"]
    counts = recent_popularity_scores(data.split, data.catalogue, cfg.release_recent_items)
    out = {}
    for label, factor in (("counts only (sensitivity sqrt(k))", 1), ("counts and ratings (sensitivity sqrt(2k))", 2)):
        sigma = release_noise(cfg) * np.sqrt(factor * cfg.release_recent_items)
        for seed in seeds:
            prior = popularity_prior(counts + noise_share(counts.shape, sigma), cfg.prior_strength)
            out.setdefault(f"zero-shot text + released prior, {label}", []).append(
                {**_both(text + prior, users, data), "seed": seed})
    return out


def _profile(recommender, reviews) -> str:
    from common.text import profile_text

    return profile_text(reviews, recommender.catalogue.items, style=recommender.cfg.profile_style)


def _stat(runs: list[dict], key: str) -> str:
    return mean_std([r["test"][key] for r in runs])


def render(results: dict) -> str:
    lines = [f"Measured {results['date']} on 2 CPU cores with `python scripts/benchmark_recommender.py` "
             f"(seeds {', '.join(map(str, results['seeds']))}). Real data, leave-last-out, full ranking over "
             "unseen items, test metrics on every user; mean ± std over seeds (one value: deterministic). "
             "Weights marked *picked* were chosen on validation NDCG@10, per seed.", "",
             "### Warm users", "", "| recommender | HR@10 | NDCG@10 | seeds | note |", "|---|---|---|---|---|"]
    for name, runs in results["warm"].items():
        weights = runs[0].get("weights")
        note = ", ".join(f"{p} {w:g}" for p, w in weights.items()) if weights else ""
        if "attributes" in (weights or {}):
            note += f" (picked: {', '.join(format(r['weights']['attributes'], 'g') for r in runs)})"
        lines.append(f"| {name} | {_stat(runs, 'hr@10')} | {_stat(runs, 'ndcg@10')} | {len(runs)} | {note} |")
    lines += ["", "Centralised same model (foundation, one seed): NDCG@10 0.0463, HR@10 0.0910.", "",
              "### Cold-start users", "",
              f"{int(COLD_HELD_OUT * 100)}% of users held out of everything; the model sees their first reviews "
              "only and ranks all their later items (each relevant).", "",
              "| profile: recommender | HR@10 | NDCG@10 | users |", "|---|---|---|---|"]
    for name, runs in results["cold"].items():
        lines.append(f"| {name} | {_stat(runs, 'hr@10')} | {_stat(runs, 'ndcg@10')} | {runs[0]['users']} |")
    if results.get("ratings"):
        lines += ["", "### Star ratings", "", "Every user's test review; shrinkages picked on the validation reviews.", "",
                  "| predictor | RMSE | MAE | draws | picked |", "|---|---|---|---|---|"]
        for name, runs in results["ratings"].items():
            picks = ", ".join(dict.fromkeys(r["weights"]["picked"] for r in runs)) if "weights" in runs[0] else ""
            lines.append(f"| {name} | {_stat(runs, 'rmse')} | {_stat(runs, 'mae')} | {len(runs)} | {picks} |")
        lines += ["", "What the ratings in the release cost the ranking (epsilon 8, warm users, no neighbours):", "",
                  "| release | HR@10 | NDCG@10 | draws |", "|---|---|---|---|"]
        for name, runs in results.get("rating-cost", {}).items():
            lines.append(f"| {name} | {_stat(runs, 'hr@10')} | {_stat(runs, 'ndcg@10')} | {len(runs)} |")
    return "\n".join(lines)


def _default_runs(name: str, row: str) -> list[Path]:
    path = OUT / name
    if not path.exists():
        return []
    return [Path(r["run"]) for r in json.loads(path.read_text())["runs"].get(row, []) if Path(r["run"]).exists()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", choices=("reference", "models", "cold", "ratings"), nargs="+",
                        default=["reference", "models", "cold", "ratings"], help="which parts to (re)measure")
    parser.add_argument("--render-only", action="store_true", help="rewrite results.md from the JSON")
    args = parser.parse_args()
    setup_logging(False)
    path = OUT / "recommender.json"
    results = json.loads(path.read_text()) if path.exists() else {"warm": {}, "cold": {}}
    if not args.render_only:
        from common.run_data import RunData

        data = RunData.load(_config())
        if "reference" in args.only:
            results["warm"].update(reference_rows(data, args.seeds))
        if "models" in args.only:
            results["warm"].update(model_rows("zero-shot", [None], data))
            results["warm"].update(model_rows("federated, no DP", _default_runs("dp_utility.json", "no DP"), data))
            results["warm"].update(model_rows("federated, distributed DP epsilon 8",
                                              _default_runs("federation_dp.json", "distributed, epsilon 8"), data))
        if "cold" in args.only:
            results["cold"] = cold_start(data, args.seeds)
        if "ratings" in args.only:
            results["ratings"] = rating_rows(data, args.seeds)
            results["rating-cost"] = rating_release_cost(data, args.seeds)
        results.update(date=time.strftime("%Y-%m-%d"), seeds=args.seeds)
        path.write_text(json.dumps(results, indent=1))
    replace_section(OUT / "results.md", SECTION, render(results))
    print(render(results))


def _by_user(data) -> dict[str, list]:
    """Every user's reviews in time order (train, then validation and test)."""
    split = data.split
    return {u: list(split.train[u]) + [x for x in (split.valid.get(u), split.test.get(u)) if x is not None]
            for u in split.train}


if __name__ == "__main__":
    main()
