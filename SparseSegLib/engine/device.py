"""Pick the compute device: CUDA when there is one, then Apple MPS, then the CPU."""

from __future__ import annotations

import torch

from ..errors import SparseSegError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def select_device(requested: str = "auto") -> torch.device:
    """The device for ``requested`` ("auto", "cpu", "cuda", "cuda:N" or "mps"); auto is cuda > mps > cpu.

    Under torchrun the launcher already chose each rank's device (:mod:`SparseSegLib.distributed.context`, which
    checked ``requested`` against it): that one, so that ``auto`` on an Apple-silicon node does not put a network
    on MPS that the CPU process group (gloo) cannot synchronise."""
    from ..distributed.context import current

    context = current()
    if context is not None:
        return context.device
    requested = (requested or "auto").lower()
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SparseSegError(
                "device 'cuda' was asked for but this PyTorch sees no CUDA GPU "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'})",
                "Use --device cpu, or install a CUDA build of PyTorch that matches your driver.",
            )
        return torch.device(requested)
    if requested == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise SparseSegError("device 'mps' was asked for but is not available", "Use --device cpu.")
        return torch.device("mps")
    if requested == "cpu":
        return torch.device("cpu")
    raise SparseSegError(f"unknown device {requested!r}", f"Use one of {', '.join(DEVICE_CHOICES)} (or cuda:N).")


def describe_device(device: torch.device) -> str:
    """One line naming the device, with GPU memory where it applies (shown before training starts)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        properties = torch.cuda.get_device_properties(index)
        return f"cuda:{index} ({properties.name}, {properties.total_memory / 2**30:.1f} GiB)"
    return device.type


def move_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Move ``optimizer``'s per-parameter state (momentum, running averages) to ``device``, in place.

    ``Optimizer.load_state_dict`` puts that state where the parameters are at the time of loading; a resumed run
    loads it while the network is still on the CPU and moves the network to the GPU only when training starts,
    after which the first step would mix CPU state with GPU gradients."""
    for values in optimizer.state.values():
        for key, value in values.items():
            if torch.is_tensor(value) and key != "step":  # "step" stays a CPU scalar (torch keeps it there)
                values[key] = value.to(device)


def cpu_copy(value):
    """A copy of ``value`` (nested dicts, lists and tuples of tensors and plain data) with every tensor cloned onto
    the CPU: a state to keep in memory or write that later training cannot change (``state_dict`` returns the live
    tensors) and that holds no GPU memory."""
    if torch.is_tensor(value):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: cpu_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(cpu_copy(item) for item in value)
    return value
