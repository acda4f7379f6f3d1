"""Code paths that only run when a network lives on a GPU (CUDA or Apple MPS).

There is no GPU here, so these tests stand one in: the meta device (tensors with a shape and a device but no
data) plays the GPU wherever only *where* a tensor lives matters, and a monkeypatched ``torch.backends.mps`` plays
an Apple-silicon Mac. Each test fails on the code before its fix (a device mismatch or inference-tensor error a
GPU user would have hit)."""

from __future__ import annotations

import numpy as np
import torch

from SparseSegLib.engine.device import cpu_copy, move_optimizer_state, select_device
from SparseSegLib.engine.inference import predict_probabilities
from SparseSegLib.engine.networks import NetworkConfig, build_network

GPU_STAND_IN = torch.device("meta")


class _NetworkOnAnotherDevice(torch.nn.Module):
    """A network on a GPU, as far as anyone asking it can tell: one parameter lives on the meta device, so the
    network reports that device; its forward records where its input was sent and answers with a CPU tensor."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.marker = torch.nn.Parameter(torch.empty(1, device=GPU_STAND_IN))
        self.classes, self.seen = classes, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.device.type)
        return torch.zeros((x.shape[0], self.classes) + tuple(x.shape[2:]))


def test_slice_prediction_sends_slices_to_the_networks_device_and_returns_cpu_probabilities():
    # self-labelling's validation picks each round's best epoch while the network is still on the training GPU
    from SparseSegLib.methods.self_labelling import predict_slices

    network = _NetworkOnAnotherDevice(classes=3)
    image = np.random.default_rng(0).normal(size=(6, 20, 18)).astype(np.float32)
    probabilities = predict_slices(network, image, np.array([1, 4]), context=1, multiple=8, batch=1)
    assert network.seen == ["meta", "meta"]  # two batches of one slice, each sent where the network lives
    assert probabilities.shape == (3, 2, 20, 18) and np.allclose(probabilities, 1 / 3)


def test_predicting_on_a_gpu_leaves_the_network_trainable():
    # predict_probabilities moves the network to the device; under inference_mode that move made its weights
    # inference tensors, and the next training round (self-labelling, sparse-only jobs) failed on the GPU
    config = NetworkConfig(dims=2, channels=(4, 8), num_res_units=0)
    network = build_network(config, 2)
    try:
        predict_probabilities(network, np.zeros((3, 16, 16), np.float32), config, (16, 16), GPU_STAND_IN)
    except (RuntimeError, NotImplementedError):
        pass  # the stand-in holds no data, so the prediction itself stops; the move has happened
    assert all(p.device == GPU_STAND_IN for p in network.parameters())
    assert not any(p.is_inference() for p in network.parameters())


def _stepped_optimizer() -> tuple[torch.nn.Parameter, torch.optim.Optimizer]:
    weight = torch.nn.Parameter(torch.ones(4))
    optimizer = torch.optim.RMSprop([weight], lr=0.1)
    weight.grad = torch.full((4,), 0.5)
    optimizer.step()
    return weight, optimizer


def test_a_resumed_optimizers_state_follows_the_network_to_the_gpu():
    # load_state_dict leaves the state beside the (CPU) parameters; training then runs on the GPU
    weight, optimizer = _stepped_optimizer()
    move_optimizer_state(optimizer, GPU_STAND_IN)
    state = optimizer.state[weight]
    assert state["square_avg"].device == GPU_STAND_IN
    assert state["step"].device.type == "cpu"  # as torch keeps it


def test_a_kept_optimizer_state_is_a_copy_that_later_steps_do_not_change():
    # the worker retries a round after a GPU out-of-memory error from the last state it kept in memory
    weight, optimizer = _stepped_optimizer()
    kept = cpu_copy(optimizer.state_dict())
    before = kept["state"][0]["square_avg"].clone()
    weight.grad = torch.full((4,), 2.0)
    optimizer.step()
    assert torch.equal(kept["state"][0]["square_avg"], before)
    assert kept["param_groups"][0]["lr"] == 0.1


def test_under_torchrun_every_method_trains_on_the_device_the_launcher_chose(monkeypatch):
    # on an Apple-silicon node auto means MPS, but the ranks' process group (gloo) runs on the CPU
    from SparseSegLib.distributed import context

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)  # stands in for a Mac
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto").type == "mps"
    monkeypatch.setattr(context, "_CURRENT", context.DistContext(0, 2, 0, "gloo", torch.device("cpu")))
    assert select_device("auto") == torch.device("cpu")


def test_a_registration_network_never_runs_on_mps():
    # MONAI's Warp samples with border padding, which MPS lacked in torch releases before the fix
    from SparseSegLib.engine.registration_network import registration_device

    assert registration_device("mps") == torch.device("cpu") and registration_device(GPU_STAND_IN) == GPU_STAND_IN
