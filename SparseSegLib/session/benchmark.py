"""Main-thread cost of the Slicer session on a 256^3 volume: one poll, and one round import.

``python -m SparseSegLib.session.benchmark [--size 256] [--repeats 7]`` (needs the ``slicer-core`` wheel,
``make bench-slicer``). The GUI polls every 250 ms from a Qt timer, so both must stay small: targets
poll < 20 ms and import < 300 ms. A real MRML scene holds a 256^3 volume, a one-slice annotation and
the result node; a stand-in worker (no training: a sleeping process that owns the job) appends the
events a real one writes (20 progress events between polls) and writes each round as the real worker
does (compressed ``label.nrrd`` with a realistic, non-trivial two-class prediction, then ``round.json``,
then the ``round`` event). Timed: ``Session.poll()`` with only progress events new, and
``Session.poll()`` that imports a round (read + checks + undo state + shared-layer update).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _prediction(shape, index: int, rng) -> np.ndarray:
    """A two-class label map with noisy boundaries (compresses like a real prediction, not like a box)."""
    k, j, i = np.ogrid[0:shape[0], 0:shape[1], 0:shape[2]]
    centre = np.array(shape) / 2
    radius = min(shape) * (0.25 + 0.01 * index)
    distance = np.sqrt((k - centre[0]) ** 2 + (j - centre[1]) ** 2 + (i - centre[2]) ** 2)
    noise = rng.normal(0, 2.0, shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[distance + noise < radius] = 1
    label[(distance + noise < radius * 0.6) & (i > centre[2])] = 2
    return label


def run(size: int = 256, repeats: int = 7, work_dir: str | None = None) -> dict:
    from ..io import write_image
    from ..jobs import layout
    from ..jobs.atomic import atomic_write_json
    from ..jobs.events import EventWriter
    from .headless import add_segmentation, add_volume, make_headless_slicer
    from .session import Session, SessionSettings

    rng = np.random.default_rng(0)
    scene, _, _ = make_headless_slicer()
    shape = (size, size, size)
    ras = np.array([[-0.8, 0, 0, 10.0], [0, -0.8, 0, 20.0], [0, 0, 1.2, -30.0], [0, 0, 0, 1]])
    volume = add_volume(scene, rng.normal(100, 20, shape).astype(np.float32), ras, "bench")
    painted = _prediction(shape, 0, rng)
    only_slice = np.zeros_like(painted)
    only_slice[size // 2] = painted[size // 2]
    annotation = add_segmentation(scene, volume, [("Anterior", (1.0, 0.5, 0.0), only_slice == 1),
                                                  ("Posterior", (0.2, 0.4, 1.0), only_slice == 2)])
    scene.SetUndoOn()  # after building the inputs (slicer.util's temporary labelmaps crash slicer-core with undo on)
    folder = Path(work_dir or tempfile.mkdtemp(prefix="sparseseg-bench-"))
    session = Session(volume, annotation, SessionSettings(method="sparse-only", rounds=repeats + 1), folder)
    session._start_job = lambda job, resume: None  # the stand-in worker below plays the worker
    started = time.perf_counter()
    session.start()
    export_s = time.perf_counter() - started
    session.status = "running"
    job = session.job
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(900)", "SparseSegLib.worker"])
    polls, imports, files = [], [], []
    try:
        with EventWriter(job.directory / layout.EVENTS_FILE) as events:
            events.emit("started", pid=sleeper.pid, method="sparse-only", rounds=repeats + 1, resume_from=0, device="cpu")
            session.poll()
            for index in range(1, repeats + 1):
                for step in range(20):
                    events.emit("progress", round=index, rounds=repeats + 1, step=step, total=20, loss=0.5,
                                seconds_per_step=0.1, eta_s=2.0, stage="bench")
                t = time.perf_counter()
                session.poll()
                polls.append(time.perf_counter() - t)
                folder_n = layout.round_dir(job.directory, index)
                label = _prediction(shape, index, rng)
                path = write_image(label, session.geometry, folder_n / layout.LABEL_FILE)
                files.append(path.stat().st_size)
                atomic_write_json(folder_n / layout.ROUND_FILE, {"round": index, "rounds": repeats + 1,
                                                                 "files": {"label": f"rounds/{index:03d}/label.nrrd"}})
                events.emit("round", round=index, rounds=repeats + 1, files={"label": f"rounds/{index:03d}/label.nrrd"})
                t = time.perf_counter()
                session.poll()
                imports.append(time.perf_counter() - t)
                assert session.imported_rounds[-1] == index
        check = session.result_label()
        assert np.array_equal(check, label), "the imported round differs from the worker's file"
        undo_levels = scene.GetNumberOfUndoLevels()
    finally:
        sleeper.kill()
        sleeper.wait()
    return {
        "size": list(shape), "repeats": repeats, "export_s": round(export_s, 4),
        "poll_ms": {"median": round(1000 * statistics.median(polls), 2), "max": round(1000 * max(polls), 2)},
        "import_ms": {"median": round(1000 * statistics.median(imports), 1), "max": round(1000 * max(imports), 1)},
        "label_file_kb": round(statistics.median(files) / 1024, 1), "undo_levels": undo_levels,
        "targets": {"poll_ms": 20, "import_ms": 300}, "cpu_count": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m SparseSegLib.session.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    result = run(args.size, args.repeats)
    poll, imp = result["poll_ms"], result["import_ms"]
    print(f"volume {args.size}^3, {args.repeats} rounds; export at Start {result['export_s']:.3f} s")
    print(f"poll (20 new progress events): median {poll['median']} ms, max {poll['max']} ms (target < 20 ms)")
    print(f"round import (read {result['label_file_kb']} KB label.nrrd + segments + undo state): "
          f"median {imp['median']} ms, max {imp['max']} ms (target < 300 ms)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    ok = poll["max"] < 20 and imp["max"] < 300
    print("within targets" if ok else "OVER TARGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
