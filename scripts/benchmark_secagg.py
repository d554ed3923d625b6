"""What secure aggregation costs: one distributed-DP release with SecAgg+ on and off, same devices.

The real data's 10 simulated devices (stores as ``benchmark_federation_dp.py`` builds them) answer
the same release in this process (no Ray, no network: the protocol's own compute and bytes):

* on: the product's path, ``server.secure_release.secure_release`` (Flower's ``SecAggPlusWorkflow``
  around the release strategy) against the real ClientApps (egress guard, ``secaggplus_mod``);
* off: research only, never a product mode (the server would see each device's vector with only its
  share of the noise): Flower's plain ``DefaultWorkflow`` fit round, each device answering with
  ``client.secure_release.contribute`` directly and the server summing the replies.

Both rows release the item counts (``release-recent-items`` = 2) and, with ``--head-items H``, the
head Gram; each repeat starts from fresh ledgers and fresh node state. Seconds are the server's wall
time for the release (median over ``--repeats``); bytes are every reply's payload per device, as
``MeteredGrid`` counts them. Writes ``benchmarks/secagg.json`` and a section of ``results.md``.

    python scripts/benchmark_secagg.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from common.cli import build_config  # noqa: E402
from common.report_md import replace_section  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "amazon-musical-instruments-2014"
OUT = ROOT / "benchmarks"
SECTION = "Secure aggregation on and off (issue 12)"
log = logging.getLogger("benchmark-secagg")


def plain_release(grid, context, cfg, statistic: str, config: dict | None = None) -> tuple[np.ndarray, float]:
    """The same release as a plain Flower fit round: the server sums the devices' vectors itself."""
    from flwr.server import ServerConfig
    from flwr.server.compat import LegacyContext
    from flwr.server.workflow import DefaultWorkflow
    from flwr.common import parameters_to_ndarrays

    from server.secure_release import MeteredGrid, ReleaseStrategy

    class SummingStrategy(ReleaseStrategy):
        def aggregate_fit(self, server_round, results, failures):
            self.contributors = len(results)
            self.total = sum(parameters_to_ndarrays(res.parameters)[0].astype(np.float64) for _, res in results)
            return results[0][1].parameters if results else None, {}

    strategy, metered = SummingStrategy(cfg, statistic, config), MeteredGrid(grid)
    DefaultWorkflow()(metered, LegacyContext(context, config=ServerConfig(num_rounds=1), strategy=strategy))
    return strategy.total, metered.received / max(strategy.contributors, 1)


def render(results: dict) -> str:
    a = results["args"]
    lines = [f"Command: `python scripts/benchmark_secagg.py --seed {a['seed']} --repeats {a['repeats']}` (2-core CPU, in one process: "
             f"no Ray, no network). Real data, {a['clients']} simulated devices (seed {a['seed']} stores), "
             "`dp = \"distributed\"` at epsilon 8. 'on': the product's release through Flower's SecAgg+ "
             "(`SecAggPlusWorkflow`, every device's reply through the egress guard and `secaggplus_mod`); 'off': "
             "research only, not a product mode (the server would see each device's vector carrying only its "
             "share of the noise): a plain Flower fit round in which each device answers with the same noised "
             "vector and the server sums. Seconds: the server's wall time for the release, median (min-max) over "
             "the repeats; bytes: every reply's payload per device.", "",
             "| statistic | SecAgg+ | seconds, median (min-max) | bytes per device | stages (messages per device) |",
             "|---|---|---|---|---|"]
    for r in results["rows"]:
        s = r["seconds"]
        lines.append(f"| {r['statistic']} | {r['mode']} | {statistics.median(s):.2f} ({min(s):.2f}-{max(s):.2f}) | "
                     f"{r['bytes']:,.0f} | {r['messages']} |")
    lines.append("")
    by = {(r["statistic"], r["mode"]): r for r in results["rows"]}
    for stat in dict.fromkeys(r["statistic"] for r in results["rows"]):
        on, off = by.get((stat, "on")), by.get((stat, "off"))
        if on and off:
            lines.append(f"- {stat} ({on['size']:,} numbers): SecAgg+ takes "
                         f"{statistics.median(on['seconds']) / statistics.median(off['seconds']):.1f}x the time and "
                         f"{on['bytes'] / off['bytes']:.1f}x the bytes of the plain sum.")
    lines.append("- That the secure sum equals the devices' noised vectors summed (within SecAgg+'s quantisation "
                 "step) is asserted in `tests/test_distributed_dp.py`; the round time of the whole simulated run is "
                 "in \"Distributed DP\" (release seconds).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="which benchmark stores (partition seed)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--head-items", type=int, default=100, help="also the head Gram release (0 = counts only)")
    parser.add_argument("--render-only", action="store_true", help="rewrite results.md from the JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    path = OUT / "secagg.json"
    if args.render_only:
        replace_section(OUT / "results.md", SECTION, render(json.loads(path.read_text())))
        return
    from flwr.supercore.task_identity import TaskIdentity
    from helpers import InProcessGrid, node_context

    from client.client_app import build_client_app
    import client.secure_release as device_side
    from client.simulated_devices import prepare_simulated_devices, reset_ledgers
    from common import records
    from common.federation_dp import FederationAccountant
    from flwr.clientapp import ClientApp
    from server.secure_release import head_items, secure_release

    for attr in ("_task_id", "_run_id", "_node_id"):  # Messages built outside a running Flower task
        setattr(TaskIdentity, attr, 1)
    cfg = build_config(None, [], reviews_path=str(DATA / "reviews.jsonl.gz"), items_path=str(DATA / "items.jsonl"),
                       num_clients=args.clients, seed=args.seed, dp="distributed", target_epsilon=8.0,
                       release_head_items=args.head_items, run_dir=str(OUT / "runs"),
                       stores_dir=str(OUT / "runs" / "stores"))
    prepare_simulated_devices(cfg)
    nodes = {p + 1: {records.PARTITION_ID: p, records.NUM_PARTITIONS: args.clients} for p in range(args.clients)}
    product = build_client_app(cfg)
    plain = ClientApp()

    @plain.train()
    def answer(msg, context):
        # No SecAgg+ setup, so no agreed threshold: every device assumes all of them are honest.
        real = device_side.honest_shares
        device_side.honest_shares = lambda *_: args.clients
        try:
            return device_side.contribute(msg, context, cfg)
        finally:
            device_side.honest_shares = real

    rows = []
    for statistic in [records.RELEASE_ITEM_COUNTS] + ([records.RELEASE_HEAD_GRAM] if args.head_items else []):
        for mode, app in (("on", product), ("off", plain)):
            seconds, size = [], 0
            for repeat in range(args.repeats):
                reset_ledgers(cfg, reason=f"benchmark: SecAgg+ {mode}, {statistic}, repeat {repeat}")
                grid = InProcessGrid(app, nodes)
                config = None
                if statistic == records.RELEASE_HEAD_GRAM:  # the head from a counts release, as the server does
                    counts = secure_release(InProcessGrid(product, nodes), node_context({}), cfg,
                                            FederationAccountant(cfg.target_delta)).total
                    config = {records.RELEASE_HEAD: ",".join(map(str, head_items(counts, args.head_items)))}
                started = time.perf_counter()
                if mode == "on":
                    release = secure_release(grid, node_context({}), cfg, FederationAccountant(cfg.target_delta),
                                             statistic, config)
                    total, per_device = release.total, release.upload_bytes_per_client
                else:
                    total, per_device = plain_release(grid, node_context({}), cfg, statistic, config)
                seconds.append(time.perf_counter() - started)
                size = int(np.size(total))
                messages = len(grid.replies) // args.clients
            rows.append({"statistic": statistic, "mode": mode, "seconds": [round(s, 3) for s in seconds],
                         "bytes": per_device, "messages": messages, "size": size})
            log.warning("%s, SecAgg+ %s: median %.2f s, %s bytes per device", statistic, mode,
                        statistics.median(seconds), f"{per_device:,.0f}")
    results = {"args": vars(args), "rows": rows}
    path.write_text(json.dumps(results, indent=2))
    replace_section(OUT / "results.md", SECTION, render(results))
    print(render(results))


if __name__ == "__main__":
    main()
