"""Training one model at one learning rate, and evaluating it on held-out sequences.

The protocol, the same for every mechanism (docs/TASKS.md): AdamW (β = 0.9, 0.999; weight decay 0.1, as
Zoology), a linear warm-up over the first tenth of the steps then a cosine decay to zero, gradients clipped to
norm 1, batches drawn from the fixed training set in an order fixed by the seed (a fresh permutation each
pass). Held-out accuracy is the fraction of query positions whose most likely next token is the bound value,
measured every `eval_every` steps and at the end. A loss that is not finite ends the rate: it diverged.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.nn import functional

from attnbench.mechanisms.problem import Problem
from attnbench.suite.task import TASK_TARGET, TaskCell
from attnbench.tasks.data import IGNORE, RecallData
from attnbench.tasks.model import RecallModel

WEIGHT_DECAY = 0.1
WARMUP_FRACTION = 0.1
GRAD_CLIP = 1.0
BETAS = (0.9, 0.999)


@dataclass(frozen=True)
class Setup:
    """What every learning rate of one case shares: the layer problem, implementation, cell, device, dtype and
    the data (already on the device)."""

    problem: Problem
    impl: str
    cell: TaskCell
    device: str
    dtype: str
    train: RecallData
    test: RecallData


@dataclass
class Outcome:
    """One learning rate's training: held-out accuracy at the end (None when it diverged), the last loss, the
    wall time of every step (evaluation excluded), and when held-out accuracy first reached `TASK_TARGET`."""

    lr: float
    accuracy: float | None = None
    final_loss: float | None = None
    step_times_s: list[float] = field(default_factory=list)
    steps_to_target: int | None = None
    time_to_target_s: float | None = None
    diverged_at: int | None = None
    stopped_at: int | None = None  # the step at which held-out accuracy reached the cell's `stop_at`
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, held-out accuracy)


def build_model(setup: Setup) -> RecallModel:
    """A fresh model for the setup: the same initial numbers for every learning rate (the cell's seed)."""
    cell = setup.cell
    model = RecallModel(setup.problem, setup.impl, cell.vocab, cell.layers, cell.conv_kernel, cell.seed)
    parameter_dtype = torch.float64 if setup.dtype == "fp64" else torch.float32
    return model.to(device=setup.device, dtype=parameter_dtype)


@contextlib.contextmanager
def precision(dtype: str, device: str) -> Iterator[None]:
    """TF32 matmuls for `tf32` (off otherwise), bf16 autocast for `bf16`."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = dtype == "tf32"
    try:
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def loss_of(model: RecallModel, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the next token at the query positions (every other position is ignored)."""
    logits = model(inputs)
    return functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)


@torch.no_grad()
def accuracy(model: RecallModel, data: RecallData, batch: int) -> float:
    """Fraction of query positions of `data` whose most likely next token is the label."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for start in range(0, len(data), batch):
        inputs, labels = data.inputs[start : start + batch], data.labels[start : start + batch]
        predicted = model(inputs).argmax(dim=-1)
        asked = labels != IGNORE
        correct += int((predicted[asked] == labels[asked]).sum())
        total += int(asked.sum())
    model.train(was_training)
    return correct / total


def schedule(step: int, steps: int) -> float:
    """The learning-rate multiplier at `step` (0-based): linear warm-up, then cosine decay to zero."""
    warmup = max(1, round(WARMUP_FRACTION * steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def optimizer_for(model: RecallModel, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=BETAS, weight_decay=WEIGHT_DECAY)


def batches(setup: Setup) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches without end: a fresh permutation of the training set each pass, fixed by the seed."""
    generator = torch.Generator().manual_seed(setup.cell.seed)
    size = len(setup.train)
    while True:
        order = torch.randperm(size, generator=generator).to(setup.train.inputs.device)
        for start in range(0, size - setup.cell.batch + 1 if size >= setup.cell.batch else 1, setup.cell.batch):
            chosen = order[start : start + setup.cell.batch]
            yield setup.train.inputs[chosen], setup.train.labels[chosen]


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def train_step(model: RecallModel, optimizer: torch.optim.Optimizer, inputs, labels) -> torch.Tensor:
    """One optimiser step on one batch; the loss (before the step)."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_of(model, inputs, labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    optimizer.step()
    return loss.detach()


def _evaluate(setup: Setup, model: RecallModel, outcome: Outcome, step: int) -> bool:
    """Held-out accuracy after `step` steps, recorded in `outcome`; whether training may stop here."""
    with precision(setup.dtype, setup.device):
        held_out = accuracy(model, setup.test, setup.cell.batch)
    outcome.curve.append((step, held_out))
    outcome.accuracy = held_out
    if held_out >= TASK_TARGET and outcome.steps_to_target is None:
        outcome.steps_to_target, outcome.time_to_target_s = step, sum(outcome.step_times_s)
    return held_out >= setup.cell.stop_at


def train_rate(setup: Setup, lr: float) -> Outcome:
    """Train a fresh model at `lr` for the cell's steps (or until held-out accuracy reaches `stop_at`)."""
    cell, outcome = setup.cell, Outcome(lr)
    model = build_model(setup)
    optimizer = optimizer_for(model, lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule(step, cell.steps))
    data = batches(setup)
    for step in range(1, cell.steps + 1):
        inputs, labels = next(data)
        _synchronize(setup.device)
        begin = time.perf_counter()
        with precision(setup.dtype, setup.device):
            loss = train_step(model, optimizer, inputs, labels)
        scheduler.step()
        loss_value = float(loss)  # waits for the step to finish
        outcome.step_times_s.append(time.perf_counter() - begin)
        outcome.final_loss = loss_value
        if not math.isfinite(loss_value):
            outcome.diverged_at, outcome.accuracy = step, None
            return outcome
        if (step % cell.eval_every == 0 or step == cell.steps) and _evaluate(setup, model, outcome, step):
            outcome.stopped_at = step if step < cell.steps else None
            return outcome
    return outcome
