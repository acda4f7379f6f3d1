"""CPU threading policy: seconds per training step with spinning vs passive OpenMP waits, idle and busy.

    python -m SparseSegLib.benchmarks.threads [--steps 10] [--load 0,4]

Each setting runs in a fresh process (the OpenMP wait policy is read once, when torch loads):
``OMP_WAIT_POLICY=ACTIVE`` (spin, libgomp's behaviour when nothing is set), ``PASSIVE`` (what
SparseSeg sets by default) and ``OMP_NUM_THREADS=1``. ``--load N`` starts N busy-looping processes
beside it, as other jobs on a shared machine or the Slicer GUI would be. The step is the 2D network's
(batch 16 of 64x48, forward, backward, Adam), the hot loop of every 2D method.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time

SETTINGS = {
    "spin (ACTIVE)": {"OMP_WAIT_POLICY": "ACTIVE"},
    "passive (default)": {"OMP_WAIT_POLICY": "PASSIVE"},
    "one thread": {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"},
}

CHILD = """
import sys, time, torch
from SparseSegLib.engine.networks import NetworkConfig, build_network
torch.manual_seed(0)
network = build_network(NetworkConfig.preset("2d"), num_classes=3)
optimizer = torch.optim.Adam(network.parameters())
x, y = torch.randn(16, 1, 64, 48), torch.randint(0, 3, (16, 64, 48))
loss = torch.nn.CrossEntropyLoss()
def step():
    optimizer.zero_grad(); loss(network(x), y).backward(); optimizer.step()
for _ in range(3):
    step()
started = time.perf_counter()
for _ in range(int(sys.argv[1])):
    step()
print((time.perf_counter() - started) / int(sys.argv[1]), torch.get_num_threads())
"""


def _burn(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def seconds_per_step(setting: dict, steps: int) -> tuple[float, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    output = subprocess.run([sys.executable, "-c", CHILD, str(steps)], env={**env, **setting},
                            capture_output=True, text=True, check=True).stdout.split()
    return float(output[0]), int(output[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m SparseSegLib.benchmarks.threads", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per setting (default 10)")
    parser.add_argument("--load", default="0,4", help="comma-separated numbers of busy processes beside it (default 0,4)")
    args = parser.parse_args(argv)
    print(f"2D training step (batch 16 of 64x48), {os.cpu_count()} CPUs, mean of {args.steps} steps; "
          f"load average now {os.getloadavg()[0]:.1f}")
    print(f"{'busy processes':>14}  {'setting':<18} {'threads':>7}  {'s/step':>7}")
    for load in (int(n) for n in args.load.split(",")):
        stop = multiprocessing.Event()
        burners = [multiprocessing.Process(target=_burn, args=(stop,), daemon=True) for _ in range(load)]
        for burner in burners:
            burner.start()
        time.sleep(0.5 if load else 0)
        try:
            for name, setting in SETTINGS.items():
                seconds, threads = seconds_per_step(setting, args.steps)
                print(f"{load:>14}  {name:<18} {threads:>7}  {seconds:7.3f}", flush=True)
        finally:
            stop.set()
            for burner in burners:
                burner.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
