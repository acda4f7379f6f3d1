"""Data-parallel training throughput: 1 process against N processes (torchrun, gloo on the CPU).

    python -m SparseSegLib.benchmarks.distributed [--networks 2d,3d] [--iterations 40] [--nproc 2]

Each setting is a real ``sparseseg train --method full`` on the bundled hippocampus sample (12 volumes, the
budget's global batch: 16 slices for 2D, 2 sub-volumes for 3D) in fresh processes: one process with one thread,
one process with N threads (the same cores as N processes), and ``--nproc N`` with one thread per process. The
figure is rank 0's training loop (``training.seconds`` in the model's config.json: from the first step to the
last, start-up and data loading excluded); iterations per second times the global batch gives patches per second.
Scaling efficiency = (N-process throughput / 1-process-1-thread throughput) / N. GPU figures are not measured here:
no GPU was lent to the session that wrote this; on a GPU node run the same module with ``--device cuda``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData" / "hippocampus"
BATCH = {"2d": 16, "3d": 2}


def run_training(network: str, iterations: int, nproc: int, threads: int, device: str, folder: Path) -> dict:
    """One ``sparseseg train`` in fresh processes; returns its training seconds, wall seconds and last losses."""
    out = folder / f"{network}-{nproc}p{threads}t"
    command = [sys.executable, "-m", "SparseSegLib.cli", "train", "--dataset", str(SAMPLE), "--method", "full",
               "--network", network, "--iterations", str(iterations), "--device", device, "--out", str(out)]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    result = subprocess.run(command, env=env, text=True, capture_output=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"training failed ({' '.join(command)}):\n{result.stderr[-2000:]}")
    training = json.loads((out / "config.json").read_text())["training"]
    return {"seconds": float(training["seconds"]), "wall": wall, "final_loss": training["final_loss"]}


def measure(networks: list[str], iterations: int, nproc: int, device: str) -> list[dict]:
    """Every setting of every network, one after the other (never two at once: they would share the cores)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="sparseseg-ddp-bench-") as folder:
        for network in networks:
            for processes, threads in ((1, 1), (1, nproc), (nproc, 1)):
                figures = run_training(network, iterations, processes, threads, device, Path(folder))
                rate = iterations / figures["seconds"]
                rows.append({"network": network, "processes": processes, "threads": threads, "iterations": iterations,
                             "global_batch": BATCH[network], "seconds": round(figures["seconds"], 2),
                             "wall_seconds": round(figures["wall"], 1), "iterations_per_s": round(rate, 3),
                             "patches_per_s": round(rate * BATCH[network], 1), "final_loss": round(figures["final_loss"], 4)})
                print(f"  {network} {processes} process(es) x {threads} thread(s): {rate:.2f} it/s", file=sys.stderr, flush=True)
    for row in rows:
        base = next(r for r in rows if r["network"] == row["network"] and r["processes"] == 1 and r["threads"] == 1)
        row["speed_up"] = round(row["iterations_per_s"] / base["iterations_per_s"], 2)
        row["efficiency"] = round(row["speed_up"] / max(row["processes"], row["threads"]), 2)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| network | processes x threads | global batch | iterations | train s | it/s | patches/s | speed-up | "
             "efficiency | wall s (with start-up) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['network']} | {r['processes']} x {r['threads']} | {r['global_batch']} | {r['iterations']} | "
                     f"{r['seconds']} | {r['iterations_per_s']} | {r['patches_per_s']} | {r['speed_up']} | "
                     f"{r['efficiency']} | {r['wall_seconds']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default="2d,3d", help="comma-separated: 2d, 3d (default both)")
    parser.add_argument("--iterations", type=int, default=40, help="training iterations per run (default 40)")
    parser.add_argument("--nproc", type=int, default=2, help="processes of the data-parallel run (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda (one GPU per process)")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"data-parallel throughput, `full` on the hippocampus sample, {os.cpu_count()} CPU cores, "
          f"load average {load:.1f} before the runs", flush=True)
    rows = measure(networks, args.iterations, args.nproc, args.device)
    print(table(rows))
    print(f"efficiency = speed-up / cores used (the 1 x 1 row is the base). Not measured: GPU and multi-GPU "
          f"(no GPU on this machine); load average {os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan'):.1f} after.")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
