"""Out of GPU memory: recognising it, and the smaller settings the one retry runs with."""

from __future__ import annotations

from dataclasses import replace


def is_out_of_memory(error: BaseException) -> bool:
    """True when ``error`` is (or was raised while handling) a torch out-of-memory error."""
    import torch

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, torch.OutOfMemoryError):
            return True
        if isinstance(error, RuntimeError) and "out of memory" in str(error).lower() and "cuda" in str(error).lower():
            return True
        error = error.__cause__ or error.__context__
    return False


def reduce_memory(options, case_shape: tuple[int, int, int], method=None):
    """``(options, description)`` with half the batch, or half the patch when the batch is already 1.

    Halved from what ``method`` trains with when it says (its ``memory_settings(options)`` -> ``(batch, patch or
    None[, multiple])``, see :class:`~SparseSegLib.methods.base.Method`), else from the budget's schedule. A patch
    neither the method nor the options give is the preset network's default for ``case_shape``; the halved sizes
    stay multiples of the method's network's ``multiple`` (else the preset's), so a method whose network is its
    own (Mean Teacher's 3D U-Net under the bench's ``--network 2d``) gets a window it can run."""
    from ..engine.networks import NetworkConfig, default_patch_size

    network = NetworkConfig.preset(options.network)
    own = getattr(method, "memory_settings", None)
    batch, patch, *multiple = own(options) if own is not None else (options.schedule(network.dims)["batch_size"], None)
    if batch > 1:
        return replace(options, batch_size=batch // 2), f"batch size {batch} -> {batch // 2}"
    patch = patch or (tuple(options.patch_size) if options.patch_size else default_patch_size(case_shape, network))
    multiple = multiple[0] if multiple else network.size_multiple
    smaller = tuple(max(multiple, (p // 2) // multiple * multiple) for p in patch)
    return replace(options, patch_size=smaller), f"patch size {patch} -> {smaller}"
