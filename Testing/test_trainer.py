"""The engine's one training loop (``engine.trainer.train_loop``): epochs, best weights, early stopping, hooks.

Every method trains through it (self-labelling's epochs with patience and plateau, the collaborative stages, the
registration network, Mean Teacher's per-step learning rate and EMA), so its selection rules are checked here on a
small real network with scripted epoch scores.
"""

from __future__ import annotations

import pytest
import torch

from SparseSegLib.engine.trainer import (Selection, TrainingCancelled, restore_torch_random_state, torch_random_state,
                                        train_loop)


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    network = torch.nn.Linear(4, 2)
    data = torch.randn(16, 4)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)

    def step_loss(step: int) -> torch.Tensor:
        return (network(data) - 1.0).pow(2).mean()

    return network, optimizer, step_loss


def _scripted(scores: list[float], network: torch.nn.Module, seen: list[dict]):
    """A monitor that returns the next scripted score and remembers the weights it scored."""
    def monitor(epoch_losses: list[float]) -> float:
        seen.append({k: v.clone() for k, v in network.state_dict().items()})
        return scores[len(seen) - 1]
    return monitor


def test_best_epoch_weights_are_restored_and_patience_stops():
    network, optimizer, step_loss = _setup()
    seen: list[dict] = []
    selection = Selection(3, _scripted([0.1, 0.5, 0.3, 0.2, 0.9, 1.0], network, seen), patience=2)
    result = train_loop(network, optimizer, step_loss, 18, torch.device("cpu"), selection=selection)
    # epochs 3 and 4 do not beat 0.5: stopped after 4 epochs of 3 steps, before the later better scores
    assert result.scores == [0.1, 0.5, 0.3, 0.2]
    assert result.steps == 12 and len(result.losses) == 12
    assert result.best == 0.5
    for name, value in network.state_dict().items():
        assert torch.equal(value, seen[1][name])  # the weights scored 0.5, not the last ones
    assert not torch.equal(seen[1]["weight"], seen[3]["weight"])


def test_min_epochs_and_min_delta():
    network, optimizer, step_loss = _setup()
    seen: list[dict] = []
    # 0.50005 is not better than 0.5 by more than min_delta, so it counts as stale
    selection = Selection(2, _scripted([0.5, 0.50005, 0.4, 0.3, 0.2], network, seen), min_delta=1e-4, patience=1,
                          min_epochs=4)
    result = train_loop(network, optimizer, step_loss, 10, torch.device("cpu"), selection=selection)
    assert result.scores == [0.5, 0.50005, 0.4, 0.3]  # stale from epoch 2, but not stopped before 4 epochs
    assert result.best == 0.5


def test_no_patience_runs_every_step_and_an_epoch_ends_at_the_last_step():
    network, optimizer, step_loss = _setup()
    seen: list[dict] = []
    selection = Selection(4, _scripted([0.3, 0.2, 0.1], network, seen))
    result = train_loop(network, optimizer, step_loss, 10, torch.device("cpu"), selection=selection)
    assert result.steps == 10 and result.scores == [0.3, 0.2, 0.1]  # epochs end at steps 4, 8 and 10


def test_restore_best_off_keeps_the_last_weights_and_keep_with_best_restores_a_teacher():
    network, optimizer, step_loss = _setup()
    seen: list[dict] = []
    result = train_loop(network, optimizer, step_loss, 6, torch.device("cpu"),
                        selection=Selection(2, _scripted([0.9, 0.1, 0.1], network, seen), restore_best=False))
    assert result.best == 0.9
    assert not torch.equal(network.weight, seen[0]["weight"])

    network, optimizer, step_loss = _setup()
    teacher = torch.nn.Linear(4, 2)
    teacher_seen: list[torch.Tensor] = []

    def after_step(step: int) -> None:  # an EMA-like teacher that moves every step
        with torch.no_grad():
            teacher.weight.mul_(0.5).add_(network.weight, alpha=0.5)

    def monitor(epoch_losses: list[float]) -> float:
        teacher_seen.append(teacher.weight.detach().clone())
        return [0.2, 0.8, 0.1][len(teacher_seen) - 1]

    train_loop(network, optimizer, step_loss, 6, torch.device("cpu"), after_step=after_step,
               selection=Selection(2, monitor, keep_with_best=(teacher,)))
    assert torch.equal(teacher.weight, teacher_seen[1])


def test_hooks_order_plateau_and_cancel():
    network, optimizer, step_loss = _setup()
    calls: list[tuple[str, int]] = []

    def before(step: int) -> None:
        calls.append(("before", step))

    def loss(step: int) -> torch.Tensor:
        calls.append(("loss", step))
        return step_loss(step)

    def after(step: int) -> None:
        calls.append(("after", step))

    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.1, patience=0)
    train_loop(network, optimizer, loss, 4, torch.device("cpu"), before_step=before, after_step=after,
               selection=Selection(1, lambda losses: 0.5, plateau=plateau))
    assert calls[:6] == [("before", 1), ("loss", 1), ("after", 1), ("before", 2), ("loss", 2), ("after", 2)]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.1 ** 3)  # no gain after epochs 2, 3 and 4

    network, optimizer, step_loss = _setup()
    before_weights = network.weight.detach().clone()
    with pytest.raises(TrainingCancelled):
        train_loop(network, optimizer, step_loss, 5, torch.device("cpu"), should_stop=lambda: True)
    assert torch.equal(network.weight, before_weights)  # cancelled before any step


def test_progress_and_a_tuple_loss():
    network, optimizer, step_loss = _setup()
    reports: list[tuple[int, int]] = []
    result = train_loop(network, optimizer, lambda step: (step_loss(step).detach() * 0 + 7.0, step_loss(step)), 5,
                        torch.device("cpu"), progress=lambda step, total, loss, sps: reports.append((step, total)),
                        log_every=2)
    assert reports == [(2, 5), (4, 5), (5, 5)]
    assert result.losses == [7.0] * 5  # the reported loss, while the second one was backpropagated


def test_every_method_trains_through_the_engine_loop():
    """No gradient step outside ``engine/trainer.py`` in the library (the thread-count probe, a speed benchmark of
    a bare step, is the one exception): a method that grows its own loop again fails here."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "SparseSegLib"
    allowed = {root / "engine" / "trainer.py", root / "benchmarks" / "threads.py"}
    pattern = re.compile(r"\.backward\(|\boptimizer\.step\(")
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if path in allowed:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if pattern.search(code) and "``" not in code:
                offenders.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert not offenders, "training steps outside engine.trainer.train_loop:\n" + "\n".join(offenders)


def test_a_saved_random_state_draws_the_same_numbers_after_a_checkpoint_round_trip(tmp_path):
    """What a resumed round restores. The GPU generators' branch needs CUDA, which this machine lacks: here a GPU
    checkpoint's generators are only checked to be skipped without error where no GPU (or another count) is seen."""
    torch.manual_seed(3)
    torch.save(torch_random_state(), tmp_path / "state.pt")
    expected = torch.rand(5)
    torch.rand(7)  # the run goes on, the generator moves
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    restore_torch_random_state(state)
    assert torch.equal(torch.rand(5), expected)
    foreign = {"torch_rng": state["torch_rng"], "cuda_rng": [torch.zeros(16, dtype=torch.uint8)] * 9}
    restore_torch_random_state(foreign)
    assert torch.equal(torch.rand(5), expected)
    restore_torch_random_state({"torch_rng": state["torch_rng"]})  # a checkpoint written before cuda_rng
    assert torch.equal(torch.rand(5), expected)
