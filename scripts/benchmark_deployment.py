"""Deployment against simulation: the same run, once through Flower's deployment engine, once simulated.

Deployment is README "Run on several machines" command for command (``tests/local_federation.py``):
a SuperLink with TLS and SuperNode authentication, three registered SuperNodes on the demo data
split three ways, `flwr run`. Simulation is `privrec simulate --num-clients 3` on the same data
with the same settings (its devices prepared before the clock starts, as the SuperNodes' stores
are). Every repeat starts from fresh stores and ledgers. The ServerApp's own timings are compared
(``metrics.json``, ``summary.json``): each evaluation, the round (the secure release under the
default distributed DP, training rounds otherwise), the test scoring, and the run's wall time.

The overhead of deployment is then broken down from the SuperNodes' logs: how many ClientApp
processes the nodes started (Flower 1.42 starts one per message), and what one costs before it
answers (a fresh process: interpreter and imports, opening the store, building the model),
measured by ``--probe`` in a fresh process per step. Writes ``benchmarks/deployment.json`` and a
section of ``results.md``.

    python scripts/benchmark_deployment.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from common.report_md import replace_section  # noqa: E402
from local_federation import local_federation, readme_block  # noqa: E402

OUT = ROOT / "benchmarks"
SECTION = "Deployment against simulation (issue 15)"
PHASES = ("valid-0", "round-1", "valid-1", "test", "wall")
log = logging.getLogger("benchmark-deployment")

PROBE = r"""
import json, sys, time
started = time.perf_counter()
step = sys.argv[1]
import flwr.clientapp  # noqa: F401
out = {"flwr": time.perf_counter() - started}
import client.client_app  # noqa: F401
out["clientapp-import"] = time.perf_counter() - started - out["flwr"]
t = time.perf_counter()
import torch, transformers, peft  # noqa: E401,F401 - what an evaluation or training message imports
out["model-libraries-import"] = time.perf_counter() - t
if step != "import":
    from client.encryption import Secret
    from client.local_data import ClientData
    from common.config import RunConfig
    from common.run_data import load_catalogue
    cfg = RunConfig.from_mapping(json.loads(open(sys.argv[3]).read()))
    t = time.perf_counter()
    catalogue = load_catalogue(cfg)
    data = ClientData.load(sys.argv[2], Secret.from_key_file(sys.argv[4]), catalogue)
    out["store-open"] = time.perf_counter() - t
    if step == "model":
        from common.recommender import Recommender
        t = time.perf_counter()
        Recommender(cfg, catalogue)
        out["model-and-item-vectors"] = time.perf_counter() - t
print(json.dumps(out))
"""


def phases(run: Path) -> dict[str, float]:
    """Seconds of each phase of a finished run, from its metrics and summary."""
    history = json.loads((run / "metrics.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    out = {"wall": summary["wall-seconds"]}
    for row in history:
        r = row["round"]
        if "valid-eval-seconds" in row:
            out[f"valid-{r}"] = row["valid-eval-seconds"]
        if "round-seconds" in row:
            out[f"round-{r}"] = row["round-seconds"]
    out["test"] = out["wall"] - sum(v for k, v in out.items() if k != "wall")
    return out


def only_run(runs: Path) -> Path:
    [run] = [p for p in runs.iterdir() if (p / "summary.json").exists()]
    return run


def readme_settings() -> list[str]:
    """The run settings README's `flwr run` line sets itself (besides the clients and run folder)."""
    [line] = [line for line in readme_block("shell 2").splitlines() if line.startswith("flwr run")]
    config = re.search(r'--run-config "(.*)"', line).group(1).split()
    return [item for item in config if not item.startswith(("num-clients=", "run-dir=", "$"))]


def simulated(work: Path, settings: str) -> dict[str, float]:
    """`privrec simulate --clients 3` with README's run settings and ``settings`` on fresh devices."""
    overrides = [f"--set={item.replace(chr(39), '')}"  # --set takes bare values
                 for item in [*readme_settings(), *settings.split()]]
    command = [str(Path(sys.executable).parent / "privrec"), "simulate", "--clients", "3", "--run-dir",
               str(work / "runs"), f"--set=stores-dir={work / 'stores'}", *overrides]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
    return phases(only_run(work / "runs"))


STAGE = re.compile(r"^(\S+ \S+) DEBUG flwr: \[Stage (\d)\] (Sending|Forwarding|Requesting|Received)", re.M)


def secagg_stages(run_log: str) -> dict[str, float]:
    """Seconds of each SecAgg+ stage, from the ServerApp's log (request sent to last reply in)."""
    started, out = {}, {}
    for stamp, stage, what in STAGE.findall(run_log):
        at = time.mktime(time.strptime(stamp.split(",")[0], "%Y-%m-%d %H:%M:%S")) + int(stamp.split(",")[1]) / 1000
        if what == "Received":
            out[f"secagg-stage-{stage}"] = at - started[stage]
        else:
            started[stage] = at
    return out


def deployed(work: Path, settings: str) -> tuple[dict[str, float], dict[str, int]]:
    """README's two shells with ``settings`` as ``$SETTINGS``; phases (and SecAgg+ stages) and
    ClientApp processes per node."""
    with local_federation(work, settings) as federation:
        if federation.shell2.returncode != 0:
            raise RuntimeError(federation.shell2.stderr[-2000:])
    logs = {f"device-{k}": (work / f"device-{k}" / "store.prv.node.log").read_text() for k in (1, 2, 3)}
    processes = {name: text.count("Receiving: ") for name, text in logs.items()}  # one process per message
    run = only_run(work / "runs")
    return {**phases(run), **secagg_stages((run / "run.log").read_text())}, processes


def probe(work: Path) -> dict[str, float]:
    """What a fresh ClientApp process pays before it answers, step by step (median of 3 processes),
    on device 1 with the settings of the run in ``work``."""
    config = only_run(work / "runs") / "config.json"
    store, key = work / "device-1" / "store.prv", work / "device-1" / "store.key"
    samples = []
    for _ in range(3):
        line = subprocess.run([sys.executable, "-c", PROBE, "model", str(store), str(config), str(key)], cwd=ROOT,
                              check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        samples.append(json.loads(line))
    return {k: statistics.median(s[k] for s in samples) for k in samples[0]}


def render(results: dict) -> str:
    sim, dep = results["simulation"], results["deployment"]
    before = results.get("before")  # the same benchmark on the code before the speed work, if recorded
    rows = ["| phase | simulation (s) | deployment (s) | deployment / simulation |"
            + (f" deployment before ({before['commit']}, {before['repeats']} run) |" if before else ""),
            "|---|---|---|---|" + ("---|" if before else "")]
    for phase in PHASES + tuple(sorted(k for k in dep[0] if k.startswith("secagg-stage-"))):
        if any(phase not in r for r in (dep if phase.startswith("secagg") else [*sim, *dep])):
            continue  # e.g. no validation after a declined release
        d = statistics.median(r[phase] for r in dep)
        s = statistics.median(r.get(phase, 0.0) for r in sim)
        ratio = f"{d / s:.2f}x" if s >= 0.05 else "-"
        row = f"| {phase} | {s:.1f} | {d:.1f} | {ratio} |" if not phase.startswith("secagg") else \
            f"| {phase} | - | {d:.1f} | - |"
        if before:
            row += f" {statistics.median(r[phase] for r in before['deployment']):.1f} |"
        rows.append(row)
    probe_rows = ["| step of a fresh ClientApp process | seconds |" + (" before |" if before else ""),
                  "|---|---|" + ("---|" if before else "")]
    probe_rows += [f"| {k} | {v:.2f} |" + (f" {before['probe'].get(k, 0.0):.2f} |" if before else "")
                   for k, v in results["probe"].items()]
    if before:
        probe_rows.append("")
        probe_rows.append("(Before, importing the ClientApp imported the model libraries, Opacus and Presidio too, "
                          "whatever the message.)")
    per_node = results["processes"]
    return "\n".join([
        f"`python scripts/benchmark_deployment.py --repeats {results['repeats']}` (settings: "
        f"README's{' with `' + results['settings'] + '`' if results['settings'] else ''}; demo data, 3 clients; medians over {results['repeats']} repeats, "
        f"each on fresh stores; {results['machine']}).", "",
        "valid-r: the federated evaluation after round r; round-1: the secure release (4 SecAgg+ stages); "
        "test: scoring the best round; wall: the ServerApp from start to summary; secagg-stage-k: the release's "
        "SecAgg+ stages (0 setup, 1 key shares, 2 masked vectors, 3 unmasking), each a message to every node. "
        "The simulated devices "
        "keep the research policy (exact evaluation), the deployed ones the strict default (noised "
        "evaluation); the work is the same.", "", *rows, "",
        f"ClientApp processes per node in one run: {statistics.median(per_node):.0f} (Flower 1.42 starts one per "
        "message). What each pays before answering (median of 3 fresh processes on one device):", "",
        *probe_rows, "",
        "Reading the numbers: every message in deployment pays what simulation pays once per worker. Flower 1.42's "
        "SuperNode looks for work every 3 s when idle and its SuperExec starts a new `flwr-clientapp` process per "
        "message (also with `--isolation process`), which imports Flower (about 1.4 s on an idle core) and whatever "
        "the message needs: the light SecAgg+ stages (1 and 3) import neither torch nor Opacus, stages 0 and 2 "
        "import Opacus, and with it torch (the budget check, the noise calibration), and each evaluation imports torch, transformers and PEFT "
        "and builds the model. Here the three nodes share the machine's 2 cores, so those imports queue; on real "
        "devices each node has its own."])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="fresh federations per engine (default 3)")
    parser.add_argument("--settings", default="", help="run settings for both, as `flwr run --run-config` takes "
                                                        "them, e.g. \"dp='none' num-rounds=2\" (default: none)")
    parser.add_argument("--render", action="store_true", help="only rewrite results.md from deployment.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    path = OUT / "deployment.json"
    if args.render:
        replace_section(OUT / "results.md", SECTION, render(json.loads(path.read_text())))
        return
    results = {"settings": args.settings, "repeats": args.repeats, "simulation": [], "deployment": [],
               "processes": [], "machine": f"{__import__('os').cpu_count()} cores"}
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="privrec-bench-") as tmp:
            work = Path(tmp)
            started = time.perf_counter()
            results["simulation"].append(simulated(work / "sim", args.settings))
            log.info("repeat %d: simulation %s (%.0f s)", repeat, results["simulation"][-1],
                     time.perf_counter() - started)
            started = time.perf_counter()
            run, processes = deployed(work / "deploy", args.settings)
            results["deployment"].append(run)
            results["processes"] += list(processes.values())
            log.info("repeat %d: deployment %s, processes %s (%.0f s)", repeat, run, processes,
                     time.perf_counter() - started)
            if repeat == args.repeats - 1:
                results["probe"] = probe(work / "deploy")
                log.info("probe: %s", results["probe"])
    path.write_text(json.dumps(results, indent=2))
    print(render(results))
    replace_section(OUT / "results.md", SECTION, render(results))


if __name__ == "__main__":
    main()
