"""Worker I/O overhead: what streaming one round costs on top of training, and what a GUI poll costs.

    python -m SparseSegLib.benchmarks.worker_io [--size 256] [--events 200000] [--repeat 3] [--out DIR]

Part 1 times the worker's own ``Worker.write_round`` (label map, optional probability and uncertainty
maps, checkpoint with the network's weights, checksums, ``round.json`` commit, ``round`` event) and the
client's ``Job.load_round`` for a ``size``^3 volume, with and without the float maps. Part 2 fills
``events.jsonl`` with ``events`` progress events, as a long job would, and times the client's
``EventReader.poll``: the first poll (bounded by ``max_bytes``, so a backlog is drained over several
GUI ticks), draining the whole backlog, and the steady-state tick (one new event, or none).

The label map is a synthetic two-class ellipsoid pair: this measures file sizes and I/O, not quality.
Figures are medians over ``repeat`` runs, in milliseconds; the machine is shared, so compare rows of
one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ..case import Geometry
from ..jobs import layout
from ..jobs.client import Job
from ..jobs.events import EventReader, EventWriter
from ..jobs.schema import read_job
from ..methods.base import RoundResult


def _timed(function, repeat: int) -> tuple[float, object]:
    """Median wall time in ms of ``function()`` over ``repeat`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times), result


def _synthetic_round(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, two-class label map and class probabilities on a ``size``^3 grid."""
    k, j, i = np.ogrid[:size, :size, :size]
    centre = size / 2
    radius = ((k - centre) / (0.3 * size)) ** 2 + ((j - centre) / (0.2 * size)) ** 2 + ((i - centre) / (0.25 * size)) ** 2
    label = np.zeros((size,) * 3, np.uint8)
    label[radius < 1] = 1
    label[(radius < 1) & (i > centre)] = 2
    rng = np.random.default_rng(0)
    image = (100 * label + rng.normal(0, 20, label.shape)).astype(np.float32)
    smooth = np.clip(1.5 - radius, 0, 1).astype(np.float32)
    foreground = np.stack([smooth * (label == 1), smooth * (label == 2)])
    probabilities = np.concatenate([1 - foreground.sum(0, keepdims=True), foreground]).astype(np.float32)
    return image, label, probabilities


def _network_state() -> dict:
    """The weights a real round checkpoints: the default 3D network's state dict."""
    from ..engine.networks import NetworkConfig, build_network

    network = build_network(NetworkConfig.preset("3d"), num_classes=3)
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


def bench_rounds(folder: Path, size: int, repeat: int) -> list[tuple[str, float, str]]:
    """Write and read one round through the worker's and the client's own code."""
    from ..worker import StopRequest, Worker, WorkerLog
    from ..case import Case

    image, label, probabilities = _synthetic_round(size)
    geometry = Geometry(size=(size, size, size), spacing=(0.8, 0.8, 1.5), origin=(-100.0, -90.0, 20.0))
    annotation = np.zeros_like(label)
    annotation[size // 2] = label[size // 2]
    rows = []
    network = _network_state()
    for maps in (False, True):
        jobdir = folder / f"round-{'maps' if maps else 'labels'}"
        Job.create(jobdir, image, geometry, annotation, "sparse-only",
                   parameters={"save_probabilities": maps, "save_uncertainty": maps})
        spec = read_job(jobdir)
        with EventWriter(jobdir / layout.EVENTS_FILE) as events:
            worker = Worker(jobdir, events, StopRequest(jobdir), WorkerLog(jobdir / layout.LOG_FILE))
            case = Case(spec.case_id, image, geometry, annotation, None, {1: "one", 2: "two"})
            index = iter(range(1, 10_000))

            def write():
                result = RoundResult(index=next(index), total=10_000, labels={case.case_id: label},
                                     probabilities={case.case_id: probabilities}, metrics={"loss": 0.1},
                                     state={"format": 1, "method": "sparse-only", "round": 1, "network": network})
                return worker.write_round(spec, case, None, result, {}, time.perf_counter())

            write_ms, record = _timed(write, repeat)
        read_ms, data = _timed(lambda: Job(jobdir).load_round(probabilities=maps), repeat)
        assert data.label.shape == label.shape and np.array_equal(data.label, label)
        round_dir = jobdir / layout.ROUNDS_DIR / layout.round_name(record["round"])
        megabytes = sum(p.stat().st_size for p in round_dir.iterdir()) / 2**20
        checkpoint_mb = (jobdir / record["checkpoint"]).stat().st_size / 2**20
        what = "label + probabilities + uncertainty" if maps else "label map only"
        rows.append((f"write round ({what})", write_ms, f"{megabytes:.1f} MiB round files + {checkpoint_mb:.1f} MiB checkpoint"))
        rows.append((f"load round ({what})", read_ms, "client Job.load_round"))
    return rows


def bench_polling(folder: Path, count: int, repeat: int) -> list[tuple[str, float, str]]:
    """Poll cost with a large events file: first poll, full drain, and the steady-state GUI tick."""
    path = folder / "events" / layout.EVENTS_FILE
    with EventWriter(path) as events:
        for step in range(count):
            events.emit("progress", round=1 + step // 1000, rounds=200, step=step % 1000, total=1000,
                        loss=0.5, eta_s=1234.5, stage="sparse-only round 1/200")
        size_mb = path.stat().st_size / 2**20
        rows = []
        first_ms, first = _timed(lambda: EventReader(path).poll(), repeat)
        chunk_kib = EventReader(path).max_bytes // 1024
        rows.append((f"first poll of a {size_mb:.0f} MiB events file", first_ms,
                     f"{len(first)} of {count} events (reads at most {chunk_kib} KiB per call)"))
        drain_ms, _ = _timed(lambda: EventReader(path).read_all(), repeat)
        rows.append((f"drain all {count} events", drain_ms, "EventReader.read_all"))
        reader = EventReader(path)
        reader.read_all()
        idle_ms, _ = _timed(reader.poll, max(repeat, 20))
        rows.append(("poll, nothing new", idle_ms, "steady state between events"))

        def one_new():
            events.emit("progress", round=1, rounds=200, step=1, total=1000, loss=0.5, eta_s=1.0, stage="tick")
            started = time.perf_counter()
            new = reader.poll()
            elapsed = 1000 * (time.perf_counter() - started)
            assert len(new) == 1
            return elapsed

        ticks = [one_new() for _ in range(max(repeat, 20))]
        rows.append(("poll, one new event", statistics.median(ticks), "the usual QTimer tick during training"))
    return rows


def format_rows(rows: list[tuple[str, float, str]]) -> str:
    width = max(len(name) for name, _, _ in rows)
    lines = [f"{'operation'.ljust(width)}  {'median ms':>10}  notes", f"{'-' * width}  {'-' * 10}  -----"]
    lines += [f"{name.ljust(width)}  {ms:10.2f}  {notes}" for name, ms, notes in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m SparseSegLib.benchmarks.worker_io", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="edge of the cubic volume (default 256)")
    parser.add_argument("--events", type=int, default=200_000, help="progress events in the large events file (default 200000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure, the median is printed (default 3)")
    parser.add_argument("--out", type=Path, help="scratch folder (default: a temporary one, removed afterwards)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.out) as scratch:
        folder = Path(scratch)
        print(f"worker I/O benchmark: {args.size}^3 volume, {args.events} events, median of {args.repeat}; scratch {folder}")
        rows = bench_rounds(folder, args.size, args.repeat)
        rows += bench_polling(folder, args.events, args.repeat)
    print(format_rows(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
