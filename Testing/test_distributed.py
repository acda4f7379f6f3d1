"""Data-parallel training (issue 18): torchrun with 2 CPU processes (gloo) on the bundled hippocampus sample.

* the global loss of sharded batches equals the one-process loss, gradients included (no processes needed);
* ``sparseseg train --nproc 2 --ddp-sampling global`` gives the one-process loss curve (tolerance 1e-4 per step:
  the ranks see the same samples, only the summation order of the all-reduce differs, measured 1e-5);
* a rank killed mid-training ends the run with an error line within seconds, not a hang, and no model folder;
* bad launches are one-line errors.

The multi-process tests start real torchrun runs (``sparseseg train --nproc 2``) with tiny iteration counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from SparseSegLib.distributed import context as dist_context
from SparseSegLib.distributed.context import DistContext, check_method, check_volumes, seed_for_rank
from SparseSegLib.distributed.launch import strip_nproc, torchrun_arguments
from SparseSegLib.distributed.training import GlobalMaskedDiceCELoss
from SparseSegLib.engine.losses import MaskedDiceCELoss
from SparseSegLib.errors import SparseSegError

REPO = Path(__file__).resolve().parents[1]
#: per-step agreement of the 2-process and 1-process loss curves (same samples; all-reduce rounding only)
LOSS_TOLERANCE = 1e-4


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", SPARSESEG_DIST_TIMEOUT="60", PYTHONPATH=str(REPO))
    return env


def _sparseseg(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "SparseSegLib.cli", *args], cwd=REPO, env=_env(), text=True,
                          capture_output=True, timeout=timeout)


@pytest.fixture
def four_cases(tmp_path: Path, sample_dataset) -> Path:
    path = tmp_path / "cases.txt"
    path.write_text("\n".join(ref.case_id for ref in sample_dataset.cases[:4]))
    return path


def test_sharded_global_loss_equals_one_batch():
    """Two shards of a batch, each with the other's sums as constants, give the one-batch loss and gradient."""
    torch.manual_seed(0)
    logits = torch.randn(6, 3, 12, 12, requires_grad=True)
    target = torch.randint(-1, 3, (6, 1, 12, 12))
    weight = (target >= 0).float() * torch.rand(6, 1, 12, 12)
    reference = MaskedDiceCELoss()(logits, target, weight)
    expected, = torch.autograd.grad(reference, logits)
    shards = [torch.arange(0, 6, 2), torch.arange(1, 6, 2)]
    sums = []
    for index in shards:  # what each rank would contribute to the all-reduce
        GlobalMaskedDiceCELoss(1, 1, 1, reduce=lambda t: sums.append(t) or t)(logits[index], target[index], weight[index])
    total = sums[0] + sums[1]
    gradient = torch.zeros_like(logits)
    for index in shards:
        part = logits.detach()[index].clone().requires_grad_(True)
        loss, backward = GlobalMaskedDiceCELoss(1, 1, 2, reduce=lambda t: total.clone())(part, target[index], weight[index])
        assert float(loss) == pytest.approx(float(reference), abs=1e-6)
        gradient[index] = torch.autograd.grad(backward, part)[0] / 2  # DDP averages the two ranks' gradients
    assert torch.allclose(gradient, expected, atol=1e-8)


def test_launch_checks_and_helpers(monkeypatch):
    assert seed_for_rank(0, 0) != seed_for_rank(0, 1) and seed_for_rank(3, 1) == seed_for_rank(3, 1)
    assert strip_nproc(["train", "--nproc", "2", "--out", "m", "--nproc=3"]) == ["train", "--out", "m"]
    assert torchrun_arguments(["train", "--nproc", "2"], 2)[-2:] == ["SparseSegLib.cli", "train"]
    check_volumes(1)  # one process: nothing to check
    fake = DistContext(rank=0, world_size=3, local_rank=0, backend="gloo", device=torch.device("cpu"))
    monkeypatch.setattr(dist_context, "_CURRENT", fake)
    with pytest.raises(SparseSegError, match="3 processes for 2 training volumes"):
        check_volumes(2)
    with pytest.raises(SparseSegError, match="does not run data-parallel"):
        check_method("propagate")
    check_method("full")
    from SparseSegLib.distributed.training import check_batch

    with pytest.raises(SparseSegError, match="global batch of 2 cannot be split over 3 processes"):
        check_batch(fake, 2)
    assert [list(DistContext(r, 3, r, "gloo", torch.device("cpu")).share(7)) for r in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]
    if not torch.cuda.is_available():
        with pytest.raises(SparseSegError, match="has no CUDA GPU"):
            dist_context._device_for("cuda", 0)


def test_commands_other_than_train_and_bench_refuse_torchrun(monkeypatch, capsys):
    from SparseSegLib.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["evaluate", "--pred", "p", "--ref", "r"]) == 2
    assert "`sparseseg evaluate` does not run under torchrun" in capsys.readouterr().err


def test_two_processes_reproduce_the_one_process_loss_curve(tmp_path: Path, sample_dir: Path, four_cases: Path):
    common = ["train", "--dataset", str(sample_dir), "--cases", str(four_cases), "--method", "full",
              "--iterations", "5", "--device", "cpu"]
    from SparseSegLib.cli import main

    assert main([*common, "--out", str(tmp_path / "one")]) == 0  # one process, in this one
    two = _sparseseg(*common, "--nproc", "2", "--ddp-sampling", "global", "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr
    assert "global batch 16 (8 per rank, global sampling), learning rate 0.001" in two.stderr
    assert two.stdout.count("model written to") == 1  # rank 0 alone writes
    curves = [json.loads((tmp_path / name / "config.json").read_text())["training"] for name in ("one", "two")]
    assert len(curves[0]["losses"]) == len(curves[1]["losses"]) == 5
    assert curves[0]["losses"] == pytest.approx(curves[1]["losses"], abs=LOSS_TOLERANCE)
    assert curves[1]["distributed"] == {"processes": 2, "backend": "gloo", "sampling": "global"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".tmp-", ".old-"))]


def test_world_size_above_the_volumes_is_one_error(tmp_path: Path, sample_dir: Path, sample_dataset):
    one_case = tmp_path / "one.txt"
    one_case.write_text(sample_dataset.cases[0].case_id)
    result = _sparseseg("train", "--dataset", str(sample_dir), "--cases", str(one_case), "--method", "full",
                        "--iterations", "2", "--device", "cpu", "--nproc", "2", "--out", str(tmp_path / "m"))
    assert result.returncode == 2  # the launcher's check, before any rank starts (each rank checks it too)
    assert result.stderr.count("2 processes for 1 training volumes") == 1
    assert "Traceback" not in result.stderr and not (tmp_path / "m").exists()


def test_a_killed_rank_ends_the_run_with_an_error(tmp_path: Path, sample_dir: Path, four_cases: Path):
    psutil = pytest.importorskip("psutil")
    out = tmp_path / "model"
    process = subprocess.Popen([sys.executable, "-m", "SparseSegLib.cli", "train", "--dataset", str(sample_dir),
                                "--cases", str(four_cases), "--method", "full", "--iterations", "100000",
                                "--device", "cpu", "--nproc", "2", "--out", str(out)],
                               cwd=REPO, env=_env(), text=True, stderr=subprocess.PIPE, stdout=subprocess.PIPE)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while not any("data-parallel over 2 processes" in line for line in lines):
            assert process.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        time.sleep(1.0)  # training steps are running now
        ranks = [p for p in psutil.Process(process.pid).children(recursive=True)
                 if p.environ().get("RANK") == "1" and "SparseSegLib.cli" in " ".join(p.cmdline())]
        assert len(ranks) == 1
        ranks[0].kill()
        code = process.wait(timeout=60)  # not a hang: the others stop within the launcher's monitoring
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(timeout=5)
    text = "".join(lines)
    assert code != 0
    assert "sparseseg: error: the distributed run failed: rank 1 was killed by SIGKILL first" in text
    # the survivor says why it stopped (SIGTERM from torchrun, or its collective losing the peer first), unless it
    # was itself killed: torchrun SIGKILLs a rank that has not ended 30 s after its SIGTERM, which a rank blocked in
    # a C++ call on a machine loaded far beyond its cores can take (seen once in ~70 runs beside two CPU hogs)
    if "rank 0 was killed by SIGKILL" not in text:
        assert "sparseseg: error: [rank 0] stopped by the launcher" in text or "[rank 0] rank 0 lost contact" in text
    assert "Traceback" not in text, text
    assert not out.exists()


def test_self_labelling_ranks_share_the_pseudo_labels(tmp_path: Path, sample_dir: Path, four_cases: Path):
    """Each rank labels its share of the volumes; after every round all hold the same pseudo-labels (each round's
    digest is all-gathered and compared, a difference stops the run) and rank 0 alone writes one model folder."""
    result = _sparseseg("train", "--dataset", str(sample_dir), "--cases", str(four_cases), "--method",
                        "self-labelling-faithful", "--iterations", "30", "--option", "max_rounds=3", "--device", "cpu",
                        "--nproc", "2", "--out", str(tmp_path / "model"))
    assert result.returncode == 0, result.stderr
    rounds = json.loads((tmp_path / "model" / "config.json").read_text())["training"]["rounds"]
    assert len(rounds) == 3 and all(len(r["pseudo_labels_sha256"]) == 64 for r in rounds)
    assert rounds[1]["new_slices"] > 0 and len({r["pseudo_labels_sha256"] for r in rounds}) == 3  # labels grew
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases.txt", "model"]


def test_diverging_pseudo_labels_stop_the_run(monkeypatch):
    import numpy as np

    from SparseSegLib.distributed import collectives

    monkeypatch.setattr(collectives, "all_gather_objects", lambda value: [value, "0" * 64])
    with pytest.raises(SparseSegError, match=r"different pseudo-labels \(ranks \[1\] differ"):
        collectives.agreed_digest([np.zeros((2, 3), np.int16)], "pseudo-labels")


def test_rank_zero_alone_prints_launch_errors(monkeypatch):
    """Every rank raises a launch check alike: rank 0 prints it; a rank's own trouble is printed by that rank."""
    from SparseSegLib.distributed.context import LaunchError, RankStopped
    from SparseSegLib.distributed.run import error_is_printed, error_prefix

    monkeypatch.setenv("WORLD_SIZE", "2")
    own = RankStopped("lost contact")
    for rank, launch_printed in (("0", True), ("1", False)):
        monkeypatch.setenv("RANK", rank)
        assert error_is_printed(LaunchError("2 processes for 1 training volumes")) is launch_printed
        assert error_is_printed(own) and error_prefix() == f"[rank {rank}] "


def test_a_stop_signal_inside_a_weakref_callback_still_ends_the_rank_with_one_line():
    """SIGTERM delivered while Python runs a callback it cannot raise from (CI saw one inside importlib's module-lock
    weakref callback) must end the rank with its one-line error, not print 'Exception ignored' and carry on."""
    script = (
        "import gc, os, sys, weakref\n"
        "from SparseSegLib.distributed import context\n"
        "sys.unraisablehook = context._stop_when_unraisable\n"
        "class Owner: pass\n"
        "def callback(_):\n"
        "    context._stop_on_sigterm(15, None)\n"
        "owner = Owner(); ref = weakref.ref(owner, callback)\n"
        "del owner; gc.collect()\n"
        "print('carried on after the stop')\n"
    )
    env = dict(_env(), RANK="1")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "carried on" not in result.stdout
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert result.stderr.strip().startswith("sparseseg: error: [rank 1] stopped by the launcher")


def test_a_stop_signal_during_exit_after_the_ranks_own_error_prints_no_traceback():
    """The survivor of a killed rank may report its lost peer and start exiting before torchrun's SIGTERM arrives;
    Python's exit then runs ``weakref.finalize`` callbacks, which hand what they catch to ``sys.excepthook`` (the
    traceback CI saw once in ``test_a_killed_rank_ends_the_run_with_an_error``). A real SIGTERM, sent to the
    process from inside such a finalizer, must end it with one line."""
    script = (
        "import os, signal, sys, time, weakref\n"
        "from SparseSegLib.distributed import context\n"
        "context.install_stop_handlers()\n"
        "class Owner: pass\n"
        "def at_exit():\n"
        "    os.kill(os.getpid(), signal.SIGTERM); time.sleep(5)\n"
        "    print('finalizer carried on', flush=True)\n"
        "owner = Owner(); weakref.finalize(owner, at_exit)\n"
        "print('sparseseg: error: [rank 0] rank 0 lost contact (the rank own error)', file=sys.stderr, flush=True)\n"
        "sys.exit(2)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env=dict(_env(), RANK="0"), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "carried on" not in result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1].startswith("sparseseg: error: [rank 0] stopped by the launcher")
