"""Pick the compute device: CUDA when there is one, then Apple MPS, then the CPU."""

from __future__ import annotations

import torch

from ..errors import SparseSegError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def select_device(requested: str = "auto") -> torch.device:
    """The device for ``requested`` ("auto", "cpu", "cuda", "cuda:N" or "mps"); auto is cuda > mps > cpu."""
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
