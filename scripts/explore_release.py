"""What-if explorer for a one-shot, user-level DP release of sufficient statistics over the federation.

The question: instead of DP-SGD rounds, release once (a) item counts and (b) a head-item Gram
matrix, summed over all users with Gaussian noise added once to the sum (what a secure sum of
the clients' noise shares gives), and add them to the zero-shot text model's scores, which cost
no privacy. Which clip, prior weight, head size, EASE ridge and weight, and budget split to use?

Mechanisms (each user clipped to their k most recent *train* items):

* A, DP popularity prior: c = sum_u x_u + N(0, (sigma sqrt(k))^2), x_u the 0/1 indicator of the
  user's k most recent train items (L2 sensitivity sqrt(k)). Score = zero-shot + beta T(c), with
  T = log1p(max(c, 0)) ('log') or max(c, 0) / max(c) ('lin').
* B, A + head-item EASE: a second release, the upper triangle (with the diagonal) of X_H^T X_H
  on the H head items by A's *noised* counts, each user clipped to their k2 most recent head
  items (L2 sensitivity sqrt(k2 (k2 + 1) / 2)). EASE on the symmetrised noisy Gram,
  P = (G + lambda I)^-1, B = -P / diag(P), diag(B) = 0; a user's score on head items is
  x_u,H @ B with x_u their full, local train history (joint DP). Score = zero-shot +
  beta lin(c) + gamma E / std(E): the prior uses 'lin', which A prefers, and the EASE scores are
  divided by their standard deviation over all users' head items (post-processing, so that gamma
  means roughly the same at every noise level and ridge).
  The budget is split in RDP 'rho' shares: 1 / sigma_A^2 = f / sigma^2 and
  1 / sigma_B^2 = (1 - f) / sigma^2, where sigma is the single-release noise multiplier for the
  total epsilon; the composition has exactly the single release's RDP curve (checked with
  Opacus's RDPAccountant; f = 0.5 is Opacus's steps=2 multiplier).

Also: the same with exact statistics (non-private ceilings), popularity alone (no text; exact
counts with the project's id tie-break, and DP counts) and the zero-shot model alone.

What it simplifies: the BERT encoder is frozen with LoRA off (the zero-shot start, as in
``explore_dp.py``, whose cached profile vectors it reuses); the noise is drawn centrally from
torch.Generator seeds 0, 1, 2 instead of as secure-summed client shares; noise multipliers come
from Opacus's RDP accountant with sample rate 1 and delta 1e-5 for the whole federation; no
client partition is needed because the release is a sum over all users. Hyper-parameters are
chosen per epsilon on validation NDCG@10 (mean over the 3 draws); test is reported at the chosen
setting; '±' is the standard deviation over the 3 draws. Ranking: full catalogue, each user's train items
excluded, ties count against the target (as ``common/metrics.py``), every user with a held-out item.

Outputs: ``benchmarks/explore_release.json`` holds what a reader needs (noise multipliers, the per-epsilon
choices with valid/test mean ± std, the fixed defaults with their per-epsilon numbers, the exact ceilings,
seconds, and the scaling study); every grid setting's validation NDCG@10 goes to the gitignored
``benchmarks/runs/explore_release_grid.json`` (``--grid-out``). ``--slim`` moves the grid out of an older,
single-file output.

Population scaling (``--scaling``, A only, no tuning): the product's default for A (k = 2, 'lin',
beta = 20: ``release-recent-items`` and ``prior-strength``) released over a random 25%, 50% and 100% of the
users (subset draw d = 0, 1, 2 from torch.Generator seed 1000 + d, paired with noise draw d; 100% is the
full set every time), with the same single-release noise multiplier per epsilon, so the count noise is the
same while the counts grow with the federation. Test NDCG@10 / HR@10 are over the subset's own users
(their held-out items, full ranking without their train items), next to the exact (no-noise) release and
the zero-shot model on the same subsets. 'DP/exact' is per draw, then mean ± std over the 3 draws;
'gain kept' is (DP - zero-shot) / (exact - zero-shot) of the means over the draws (per draw, that gap
can be ~0 on a small subset).

    python scripts/explore_release.py --help
    python scripts/explore_release.py --scaling          # ~15 s once the profile cache exists
    python scripts/explore_release.py --table-only
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from explore_dp import Explorer

OUT = ROOT / "benchmarks" / "explore_release.json"
GRID_OUT = ROOT / "benchmarks" / "runs" / "explore_release_grid.json"
EPSILONS = (0.5, 1.0, 2.0, 4.0, 8.0)
DELTA = 1e-5
SEEDS = (0, 1, 2)
# Mechanism A grid.
A_CLIPS = (1, 2, 3, 5, 10)
A_BETAS = {"log": (1.0, 2.0, 3.0, 5.0, 8.0, 12.0), "lin": (5.0, 10.0, 20.0, 40.0, 80.0)}
# Mechanism B grid (the A part uses the 'lin' transform).
B_SPLITS = (0.3, 0.5, 0.7)  # f: the share of the RDP budget spent on the counts
B_CLIPS = (2, 5)
B_BETAS = (10.0, 20.0, 40.0)  # on the 'lin' transform, which A prefers
B_HEADS = (50, 100, 200, 300)
B_CLIPS2 = (3, 5, 10)
B_LAMBDAS = (200.0, 500.0, 2000.0, 5000.0)
B_GAMMAS = (0.25, 0.5, 1.0, 2.0, 4.0)
# Population scaling (A at the product defaults: release-recent-items = 2, prior-strength = 20).
SCALING_SETTING = {"k": 2, "T": "lin", "beta": 20.0}
SCALING_FRACTIONS = (0.25, 0.5, 1.0)
SCALING_SUBSET_SEED = 1000  # subset draw d uses seed 1000 + d, apart from the noise generators' seeds
log = logging.getLogger("explore-release")


class Ranker:
    """NDCG@10 and HR@10 of [users, items] scores for one held-out set (valid or test)."""

    def __init__(self, explorer: Explorer, target: str) -> None:
        t = explorer.targets[target]
        self.ok = t >= 0
        self.t = t[self.ok]
        mask = explorer.seen[self.ok].clone()
        mask[torch.arange(len(self.t)), self.t] = False  # the target is never a train item; be safe
        self.mask = torch.zeros(mask.shape).masked_fill(mask, float("-inf"))

    def __call__(self, scores: torch.Tensor, rows: torch.Tensor | None = None) -> tuple[float, float]:
        """``scores`` covers the ranked users only (rows of ``self.ok``; with ``rows``, a boolean
        selection of those, only the selected ones) and may be modified."""
        s = scores.add_(self.mask if rows is None else self.mask[rows])
        t = self.t if rows is None else self.t[rows]
        rank = (s >= s.gather(1, t[:, None])).sum(1).float()
        hit = rank <= 10
        return float(torch.where(hit, 1 / torch.log2(rank + 1), torch.zeros(())).mean()), float(hit.float().mean())


class Study:
    """Data, zero-shot scores and the clipped statistics of one run."""

    def __init__(self, explorer: Explorer) -> None:
        cat, split = explorer.rd.catalogue, explorer.rd.split
        with torch.no_grad():
            self.zero = explorer.scores(explorer.initial(), explorer.full_x)
        self.users, self.items = self.zero.shape
        self.history = [[cat.index[r.item_id] for r in split.train[u]] for u in explorer.users]  # time order
        self.full = explorer.seen.float()
        self.rankers = {"valid": Ranker(explorer, "valid"), "test": Ranker(explorer, "test")}
        self.zero_rows = {k: self.zero[r.ok].contiguous() for k, r in self.rankers.items()}
        self.full_rows = {k: self.full[r.ok].contiguous() for k, r in self.rankers.items()}
        self.sigma1 = {eps: single_multiplier(eps) for eps in EPSILONS}
        self.noise = {}
        for seed in SEEDS:  # the count noise first, then the Gram noise, from one generator per draw
            gen = torch.Generator().manual_seed(seed)
            a = torch.randn(self.items, generator=gen)
            g = torch.randn(max(B_HEADS), max(B_HEADS), generator=gen).triu()
            self.noise[seed] = (a, g + g.triu(1).T)
        self._counts: dict = {}

    def subset_counts(self, users: torch.Tensor, k: int) -> torch.Tensor:
        """Exact item counts over the users ``users`` (row indices), each clipped to their k most recent train items."""
        c = torch.zeros(self.items)
        for row in users.tolist():
            c[self.history[row][-k:]] += 1
        return c

    def counts(self, k: int | None) -> torch.Tensor:
        """Exact item counts with each user clipped to their k most recent train items (None: all)."""
        if k not in self._counts:
            c = torch.zeros(self.items)
            for h in self.history:
                c[h if k is None else h[-k:]] += 1
            self._counts[k] = c
        return self._counts[k]

    def gram(self, head: torch.Tensor, k2: int | None) -> torch.Tensor:
        """Exact X_H^T X_H, each user clipped to their k2 most recent head items (None: all)."""
        pos = torch.full((self.items,), -1, dtype=torch.long)
        pos[head] = torch.arange(len(head))
        x = torch.zeros(self.users, len(head))
        for row, h in enumerate(self.history):
            mine = [p for p in pos[h].tolist() if p >= 0]
            x[row, mine if k2 is None else mine[-k2:]] = 1.0
        return x.T @ x

    def evaluate(self, part: str, *, text: bool = True, prior: torch.Tensor | None = None,
                 head: torch.Tensor | None = None, extra: torch.Tensor | None = None,
                 rows: torch.Tensor | None = None) -> tuple[float, float]:
        """Metrics of zero-shot (if ``text``) + ``prior`` [items] + ``extra`` [ranked users, head items];
        ``rows`` (boolean over the ranked users; not with ``extra``) ranks only those users."""
        if rows is None:
            s = self.zero_rows[part].clone() if text else torch.zeros(len(self.rankers[part].t), self.items)
        else:
            s = self.zero_rows[part][rows] if text else torch.zeros(int(rows.sum()), self.items)
        if prior is not None:
            s += prior
        if extra is not None:
            s[:, head] += extra
        return self.rankers[part](s, rows)


def single_multiplier(eps: float, steps: int = 1) -> float:
    from opacus.accountants.utils import get_noise_multiplier

    return get_noise_multiplier(target_epsilon=eps, target_delta=DELTA, sample_rate=1.0, steps=steps, accountant="rdp")


def composed_epsilon(multipliers: list[float]) -> float:
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(m, 1.0, 1) for m in multipliers]
    return acc.get_epsilon(DELTA)


def transform(c: torch.Tensor, kind: str) -> torch.Tensor:
    c = c.clamp(min=0)
    return torch.log1p(c) if kind == "log" else c / c.max().clamp(min=1.0)


def ease(gram: torch.Tensor, lam: float) -> torch.Tensor:
    """EASE weights B = -P / diag(P), P = (G + lambda I)^-1, diag(B) = 0 (in float64)."""
    p = torch.linalg.inv(gram.double() + lam * torch.eye(len(gram), dtype=torch.float64))
    b = -p / p.diagonal()
    b.fill_diagonal_(0.0)
    return b.float()


def unit(study: Study, head: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The EASE weights divided by the std of the resulting scores over all users' head items."""
    e = study.full[:, head] @ b
    sd = float(e.std())
    return b / sd if sd > 0 and math.isfinite(sd) else torch.zeros_like(b)


def summary(rows: list[tuple[float, float]]) -> dict:
    t = torch.tensor(rows, dtype=torch.float64)
    sd = t.std(0, unbiased=True) if len(rows) > 1 else torch.zeros(2, dtype=torch.float64)
    return {"ndcg@10": round(float(t[:, 0].mean()), 5), "ndcg@10-std": round(float(sd[0]), 5),
            "hr@10": round(float(t[:, 1].mean()), 5), "hr@10-std": round(float(sd[1]), 5)}


# ---- Mechanism A --------------------------------------------------------------------------------

def a_grid() -> list[dict]:
    return [{"k": k, "T": kind, "beta": b} for k in A_CLIPS for kind, bs in A_BETAS.items() for b in bs]


def a_prior(study: Study, s: dict, sigma: float | None, seed: int) -> torch.Tensor:
    c = study.counts(s["k"])
    if sigma is not None:
        c = c + study.noise[seed][0] * sigma * math.sqrt(s["k"] if s["k"] else 1)
    return s["beta"] * transform(c, s["T"])


def run_a(study: Study, part: str, s: dict, eps: float | None) -> list[tuple[float, float]]:
    sigma = None if eps is None else study.sigma1[eps]
    seeds = SEEDS if eps is not None else (0,)
    return [study.evaluate(part, prior=a_prior(study, s, sigma, seed)) for seed in seeds]


def pop_grid() -> list[dict]:
    return [{"k": k} for k in A_CLIPS]


def run_pop(study: Study, part: str, s: dict, eps: float | None) -> list[tuple[float, float]]:
    if eps is None:  # exact counts of every train review, ties broken by item id as common/baselines.py
        c = study.counts(s["k"]) - torch.arange(study.items, dtype=torch.float64).float() * 1e-4
        return [study.evaluate(part, text=False, prior=c)]
    return [study.evaluate(part, text=False, prior=study.counts(s["k"]) + study.noise[seed][0] *
                           study.sigma1[eps] * math.sqrt(s["k"])) for seed in SEEDS]


# ---- Mechanism B --------------------------------------------------------------------------------

class EaseCache:
    """Noisy (or exact) counts, heads and Gram matrices per (eps, f, seed, k, H, k2), built on demand."""

    def __init__(self, study: Study) -> None:
        self.study = study
        self.grams: dict = {}

    def sigmas(self, eps: float | None, f: float) -> tuple[float | None, float | None]:
        if eps is None:
            return None, None
        s = self.study.sigma1[eps]
        return s / math.sqrt(f), s / math.sqrt(1 - f)

    def counts(self, eps, f, seed, k) -> torch.Tensor:
        sa, _ = self.sigmas(eps, f)
        c = self.study.counts(k)
        return c if sa is None else c + self.study.noise[seed][0] * sa * math.sqrt(k)

    def noisy_gram(self, eps, f, seed, k, h, k2) -> tuple[torch.Tensor, torch.Tensor]:
        key = (eps, f, seed, k, h, k2)
        if key not in self.grams:
            head = torch.argsort(self.counts(eps, f, seed, k), descending=True, stable=True)[:h]
            g = self.study.gram(head, k2)
            _, sb = self.sigmas(eps, f)
            if sb is not None:
                g = g + self.study.noise[seed][1][:h, :h] * sb * math.sqrt(k2 * (k2 + 1) / 2)
            self.grams[key] = (head, g)
        return self.grams[key]

    def weights(self, eps, f, seed, k, h, k2, lam) -> tuple[torch.Tensor, torch.Tensor]:
        head, g = self.noisy_gram(eps, f, seed, k, h, k2)
        return head, unit(self.study, head, ease(g, lam))


def b_outer(exact: bool) -> list[dict]:
    clips2 = B_CLIPS2 + ((None,) if exact else ())
    return [{"f": f, "k": k, "H": h, "k2": k2, "lambda": lam}
            for f in ((1.0,) if exact else B_SPLITS) for k in B_CLIPS for h in B_HEADS for k2 in clips2
            for lam in B_LAMBDAS]


def b_inner() -> list[dict]:
    return [{"beta": b, "gamma": g} for b in B_BETAS for g in B_GAMMAS]


def b_scores(study: Study, cache: EaseCache, part: str, outer: dict, eps: float | None,
             inner: list[dict]) -> list[list[tuple[float, float]]]:
    """Metrics per draw for every inner (beta, gamma) of one outer setting; EASE is solved once per draw."""
    out = [[] for _ in inner]
    for seed in (SEEDS if eps is not None else (0,)):
        f = outer["f"] if eps is not None else 1.0
        c = transform(cache.counts(eps, f, seed, outer["k"]), "lin")
        head, w = cache.weights(eps, f, seed, outer["k"], outer["H"], outer["k2"], outer["lambda"])
        e = study.full_rows[part][:, head] @ w
        for i, s in enumerate(inner):
            out[i].append(study.evaluate(part, prior=s["beta"] * c, head=head, extra=s["gamma"] * e))
    return out


def run_b(study: Study, cache: EaseCache, part: str, s: dict, eps: float | None) -> list[tuple[float, float]]:
    outer = {k: s[k] for k in ("f", "k", "H", "k2", "lambda")}
    return b_scores(study, cache, part, outer, eps, [s])[0]


def b_valid(study: Study, cache: EaseCache, eps: float | None) -> list[tuple[dict, float]]:
    """Validation NDCG@10 (mean over draws) of the whole B grid at one epsilon."""
    out, inner = [], b_inner()
    for outer in b_outer(eps is None):
        for s, rows in zip(inner, b_scores(study, cache, "valid", outer, eps, inner)):
            out.append(({**outer, **s}, sum(r[0] for r in rows) / len(rows)))
    return out


# ---- Population scaling (A) ---------------------------------------------------------------------

def ratio_summary(num: list[tuple[float, float]], den: list[tuple[float, float]]) -> dict:
    """Per-draw num / den, then mean ± std over the draws."""
    return summary([tuple(x / y for x, y in zip(n, d)) for n, d in zip(num, den)])


def gain_kept(dp: list[tuple[float, float]], exact: list[tuple[float, float]],
              zero: list[tuple[float, float]]) -> dict:
    """(mean DP - mean zero-shot) / (mean exact - mean zero-shot): of means, as per draw the gap can be ~0."""
    m = [sum(col) / len(col) for col in (*zip(*dp), *zip(*exact), *zip(*zero))]
    return {name: round((m[i] - m[4 + i]) / (m[2 + i] - m[4 + i]), 4) for i, name in enumerate(("ndcg@10", "hr@10"))}


def scaling(study: Study) -> dict:
    """A at the product default over random 25/50/100% of the users: DP vs exact vs zero-shot, test."""
    started, s, k = time.perf_counter(), SCALING_SETTING, SCALING_SETTING["k"]
    ok = study.rankers["test"].ok
    out = {"setting": s, "fractions": list(SCALING_FRACTIONS), "epsilons": list(EPSILONS), "delta": DELTA,
           "draws": [{"subset-seed": SCALING_SUBSET_SEED + d, "noise-seed": d} for d in SEEDS],
           "count-noise-std": {f"{e:g}": round(study.sigma1[e] * math.sqrt(k), 4) for e in EPSILONS},
           "by-fraction": {}}
    for frac in SCALING_FRACTIONS:
        zero, exact, dp, sizes, top = [], [], {e: [] for e in EPSILONS}, [], []
        for d in SEEDS:
            n = round(frac * study.users)
            users = (torch.arange(study.users) if n == study.users else
                     torch.randperm(study.users, generator=torch.Generator().manual_seed(SCALING_SUBSET_SEED + d))[:n])
            member = torch.zeros(study.users, dtype=torch.bool)
            member[users] = True
            rows = member[ok]
            sizes.append((n, int(rows.sum())))
            c = study.subset_counts(users, k)
            top.append(float(c.max()))
            zero.append(study.evaluate("test", rows=rows))
            exact.append(study.evaluate("test", prior=s["beta"] * transform(c, s["T"]), rows=rows))
            for e in EPSILONS:
                noisy = c + study.noise[d][0] * study.sigma1[e] * math.sqrt(k)
                dp[e].append(study.evaluate("test", prior=s["beta"] * transform(noisy, s["T"]), rows=rows))
        r = {"users": sizes[0][0], "test-users": [m for _, m in sizes],
             "max-clipped-count": [int(m) for m in top], "zero-shot": summary(zero), "exact": summary(exact),
             "exact/zero-shot": ratio_summary(exact, zero), "by-eps": {}}
        for e in EPSILONS:
            r["by-eps"][f"eps={e:g}"] = {"dp": summary(dp[e]), "dp/exact": ratio_summary(dp[e], exact),
                                         "gain-kept": gain_kept(dp[e], exact, zero)}
        out["by-fraction"][f"{frac:g}"] = r
        log.info("scaling %g: %s", frac, r)
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def scaling_table(sc: dict) -> str:
    s = sc["setting"]
    lines = [(f"A at k={s['k']}, '{s['T']}', beta={s['beta']:g}; test, users in the subset; mean ± std over "
              f"{len(sc['draws'])} (subset, noise) draws. 'gain kept' = (DP - zero-shot) / (exact - zero-shot)."), "",
             "| users | epsilon | NDCG@10 | DP/exact | HR@10 | DP/exact | gain kept (NDCG) |",
             "|---|---|---|---|---|---|---|"]
    noise = ", ".join(f"eps {e}: {v:g}" for e, v in sc["count-noise-std"].items())
    lines.insert(1, f"Noise std per count: {noise}; the largest clipped count grows with the users.")
    for frac, r in sc["by-fraction"].items():
        ranked = sorted(set(r["test-users"]))
        who = (f"{float(frac):.0%} ({r['users']} users" + ("" if ranked == [r["users"]] else
               f", {'/'.join(map(str, ranked))} with a test item") +
               f"; max count {'/'.join(map(str, r['max-clipped-count']))})")
        lines.append(f"| {who} | zero-shot | {_pm(r['zero-shot'], 'ndcg@10', True)} | - | "
                     f"{_pm(r['zero-shot'], 'hr@10', True)} | - | - |")
        lines.append(f"| {who} | exact | {_pm(r['exact'], 'ndcg@10', True)} | 1 | "
                     f"{_pm(r['exact'], 'hr@10', True)} | 1 | 1 |")
        for key, e in r["by-eps"].items():
            lines.append(f"| {who} | {key.replace('eps=', '')} | {_pm(e['dp'], 'ndcg@10', True)} | "
                         f"{_pm(e['dp/exact'], 'ndcg@10', True)} | {_pm(e['dp'], 'hr@10', True)} | "
                         f"{_pm(e['dp/exact'], 'hr@10', True)} | {e['gain-kept']['ndcg@10']:.2f} |")
    return "\n".join(lines)


# ---- Output -------------------------------------------------------------------------------------

def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def write_json(path: Path, data: dict, indent: int | None = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=indent) + "\n")


def move_grids(results: dict, grid_out: Path) -> None:
    """Move ``results['valid-grids']`` (every setting's validation NDCG@10) into the grid file, merged by mechanism."""
    grids = results.pop("valid-grids", None)
    if grids:
        old = read_json(grid_out)
        write_json(grid_out, {**old, **grids}, indent=None)
        log.info("wrote the validation grids of %s to %s", ", ".join(grids), grid_out)


# ---- Driver -------------------------------------------------------------------------------------

def choose(scored: list[tuple[dict, float]]) -> tuple[dict, float]:
    return max(scored, key=lambda r: r[1])


def fixed_defaults(per_eps: dict[float, list[tuple[dict, float]]]) -> tuple[dict, dict]:
    """One setting for every epsilon, two ways, and the whole validation grid.

    'mean': the best mean validation NDCG@10 over the epsilons (the noisiest epsilons weigh most);
    'maximin': the best worst-case ratio to the per-epsilon best validation NDCG@10.
    """
    keyed: dict = {}
    for eps, rows in per_eps.items():
        for s, v in rows:
            keyed.setdefault(json.dumps(s, sort_keys=True), {})[eps] = v
    full = {k: v for k, v in keyed.items() if len(v) == len(per_eps)}
    top = {eps: max(v for _, v in rows) for eps, rows in per_eps.items()}
    ratio = {k: min(v[eps] / top[eps] for eps in per_eps) for k, v in full.items()}
    picks = {"mean": max(full, key=lambda k: sum(full[k].values())), "maximin": max(full, key=ratio.get)}
    out = {how: {"setting": json.loads(k), "mean-valid-over-eps": round(sum(full[k].values()) / len(per_eps), 5),
                 "worst-ratio-to-best-valid": round(ratio[k], 4)} for how, k in picks.items()}
    grid = {"eps": list(per_eps), "settings": list(full),
            "valid-ndcg@10": [[round(full[k][eps], 5) for eps in per_eps] for k in full]}
    return out, grid


def report(run, s: dict, eps: float | None) -> dict:
    return {"setting": s, "valid": summary(run("valid", s, eps)), "test": summary(run("test", s, eps))}


def mechanism(name: str, run, grid: list[dict] | None, study: Study, results: dict, valid_fn=None) -> None:
    """Exact ceiling plus per-epsilon choice, and the best fixed setting across epsilons."""
    started = time.perf_counter()
    per_eps = {}
    for eps in (None,) + EPSILONS:
        if valid_fn is not None:
            scored = valid_fn(eps)
        else:
            scored = [(s, sum(r[0] for r in run("valid", s, eps)) / (len(SEEDS) if eps else 1)) for s in grid]
        best, _ = choose(scored)
        key = "exact" if eps is None else f"eps={eps:g}"
        results["mechanisms"].setdefault(name, {})[key] = report(run, best, eps)
        if eps is not None:
            per_eps[eps] = scored
        log.info("%s %s: %s", name, key, results["mechanisms"][name][key])
    fixed, grid = fixed_defaults(per_eps)
    for how, pick in fixed.items():
        pick["by-eps"] = {f"eps={eps:g}": report(run, pick["setting"], eps) for eps in EPSILONS}
        log.info("%s fixed default (%s): %s", name, how, pick)
    results["mechanisms"][name]["fixed-default"] = fixed
    results["mechanisms"][name]["seconds"] = round(time.perf_counter() - started, 1)
    results.setdefault("valid-grids", {})[name] = grid


def _pm(d: dict, k: str, draws: bool) -> str:
    return f"{d[k]:.4f}" + (f" ± {d[k + '-std']:.4f}" if draws else "")


def table(results: dict) -> str:
    m = results["mechanisms"]
    lines = ["| epsilon | mechanism | test NDCG@10 | test HR@10 | valid NDCG@10 | chosen (on valid) |",
             "|---|---|---|---|---|---|"]
    zs = m["zero-shot"]
    lines.append(f"| - | zero-shot | {zs['test']['ndcg@10']:.4f} | {zs['test']['hr@10']:.4f} | "
                 f"{zs['valid']['ndcg@10']:.4f} | - |")
    for key in ["exact-unclipped", "exact"] + [f"eps={e:g}" for e in EPSILONS]:
        for name in ("popularity", "A", "B"):
            if name not in m or key not in m[name]:
                continue
            r = m[name][key]
            t, v, draws = r["test"], r["valid"], key.startswith("eps")
            lines.append(f"| {key.replace('eps=', '')} | {name} | {_pm(t, 'ndcg@10', draws)} | {_pm(t, 'hr@10', draws)} | "
                         f"{v['ndcg@10']:.4f} | {json.dumps(r['setting'])} |")
    lines += ["", "| mechanism | fixed default (criterion, worst valid ratio to per-eps best) | " +
              " | ".join(f"test eps {e:g}" for e in EPSILONS) + " |", "|---|---|" + "---|" * len(EPSILONS)]
    for name, how in itertools.product(("popularity", "A", "B"), ("mean", "maximin")):
        if name in m:
            fd = m[name]["fixed-default"][how]
            lines.append(f"| {name} | {json.dumps(fd['setting'])} ({how}, {fd['worst-ratio-to-best-valid']:.2f}) | " +
                         " | ".join(
                f"{fd['by-eps'][f'eps={e:g}']['test']['ndcg@10']:.4f} ± {fd['by-eps'][f'eps={e:g}']['test']['ndcg@10-std']:.4f}"
                for e in EPSILONS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="See the module docstring for the mechanisms and simplifications.")
    parser.add_argument("--only", nargs="+", choices=("popularity", "A", "B"), default=["popularity", "A", "B"],
                        help="mechanisms to run (default all); the zero-shot row is always computed")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"JSON output (default {OUT.relative_to(ROOT)})")
    parser.add_argument("--clients", type=int, default=10,
                        help="Explorer's client count (only affects its partition, unused here)")
    parser.add_argument("--grid-out", type=Path, default=GRID_OUT,
                        help=f"every grid setting's validation NDCG@10 (default {GRID_OUT.relative_to(ROOT)})")
    parser.add_argument("--table-only", action="store_true", help="print the tables from --out and exit")
    parser.add_argument("--slim", action="store_true",
                        help="move an older --out's per-setting grid to --grid-out (no computing; with --scaling, first)")
    parser.add_argument("--scaling", action="store_true",
                        help="only the population-scaling study of A (merged into --out under 'scaling')")
    args = parser.parse_args()
    if args.table_only:
        results = json.loads(args.out.read_text())
        if "mechanisms" in results:
            print(table(results))
        if "scaling" in results:
            print("\n" + scaling_table(results["scaling"]))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
    if args.slim:
        results = read_json(args.out)
        move_grids(results, args.grid_out)
        write_json(args.out, results)
        log.info("%s is now %d bytes", args.out, args.out.stat().st_size)
        if not args.scaling:
            return
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    study = Study(Explorer(args.clients))
    if args.scaling:
        results = read_json(args.out)
        move_grids(results, args.grid_out)
        results["scaling"] = {"command": "python scripts/explore_release.py --scaling", **scaling(study),
                              "wall-seconds": round(time.perf_counter() - started, 1)}
        write_json(args.out, results)
        print(scaling_table(results["scaling"]))
        print(f"\nwall time {time.perf_counter() - started:.0f} s; wrote {args.out}")
        return
    budget = {f"{e:g}": {"sigma-single": round(study.sigma1[e], 4),
                         **{f"B f={f:g}": {"sigma-A": round(study.sigma1[e] / math.sqrt(f), 4),
                                           "sigma-B": round(study.sigma1[e] / math.sqrt(1 - f), 4),
                                           "composed-eps": round(composed_epsilon(
                                               [study.sigma1[e] / math.sqrt(f), study.sigma1[e] / math.sqrt(1 - f)]), 4)}
                            for f in B_SPLITS}} for e in EPSILONS}
    log.info("noise multipliers: %s", budget)
    results = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "delta": DELTA, "seeds": list(SEEDS), "noise": budget,
               "grids": {"A": {"k": A_CLIPS, "beta": A_BETAS}, "popularity": {"k": A_CLIPS},
                         "B": {"f": B_SPLITS, "k": B_CLIPS, "beta(lin)": B_BETAS, "H": B_HEADS, "k2": B_CLIPS2,
                               "lambda": B_LAMBDAS, "gamma (x 1/std of EASE scores)": B_GAMMAS}},
               "mechanisms": {"zero-shot": {"valid": summary([study.evaluate("valid")]),
                                            "test": summary([study.evaluate("test")])}}}
    if "popularity" in args.only:
        mechanism("popularity", lambda part, s, eps: run_pop(study, part, s, eps), None, study, results,
                  valid_fn=lambda eps: [(s, sum(r[0] for r in run_pop(study, "valid", s, eps)) /
                                         (len(SEEDS) if eps else 1)) for s in ([{"k": None}] + pop_grid() if eps is None else pop_grid())])
        results["mechanisms"]["popularity"]["exact-unclipped"] = report(
            lambda part, s, eps: run_pop(study, part, s, eps), {"k": None}, None)
    if "A" in args.only:
        exact_grid = a_grid() + [{"k": None, "T": kind, "beta": b} for kind, bs in A_BETAS.items() for b in bs]
        mechanism("A", lambda part, s, eps: run_a(study, part, s, eps), None, study, results,
                  valid_fn=lambda eps: [(s, sum(r[0] for r in run_a(study, "valid", s, eps)) /
                                         (len(SEEDS) if eps else 1)) for s in (exact_grid if eps is None else a_grid())])
    if "B" in args.only:
        cache = EaseCache(study)

        def valid_b(eps):
            cache.grams.clear()
            out = b_valid(study, cache, eps)
            log.info("B grid at %s: %d settings in %.0f s so far", eps, len(out), time.perf_counter() - started)
            return out
        mechanism("B", lambda part, s, eps: run_b(study, cache, part, s, eps), None, study, results, valid_fn=valid_b)
    results["seconds"] = round(time.perf_counter() - started, 1)
    move_grids(results, args.grid_out)
    if "scaling" in (old := read_json(args.out)):  # a separate study; keep it
        results["scaling"] = old["scaling"]
    write_json(args.out, results)
    print(table(results))
    print(f"\nwall time {results['seconds']:.0f} s; wrote {args.out} and {args.grid_out}")


if __name__ == "__main__":
    main()
