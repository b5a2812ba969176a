"""The task model and its training: built from the registry alone, learns on a tiny cell within seconds, and the
same seed gives the same accuracy."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from attnbench.mechanisms import registry
from attnbench.mechanisms.problem import Level, Mode
from attnbench.suite.case import Case
from attnbench.suite.task import TaskCell
from attnbench.tasks import train
from attnbench.tasks.model import RecallModel, RegistryMixer, parameter_count
from attnbench.tasks.run import cpu_threads, make_setup, task_row


def tiny_cell(**changes) -> TaskCell:
    settings = dict(
        name="mqar",
        seq_len=16,
        kv_pairs=2,
        vocab=16,
        d_model=12,
        heads=2,
        layers=1,
        steps=40,
        batch=16,
        lrs=(1e-2,),
        train_size=256,
        test_size=32,
        eval_every=20,
        stop_at=1.0,
        conv_kernel=3,
        power_a=0.01,
        seed=3,
    )
    return TaskCell(**{**settings, **changes})


def task_case(mechanism: str, cell: TaskCell, **params) -> Case:
    found = registry.get(mechanism)
    if "G" in found.params:  # key/value heads: as many as the cell's heads divide
        params = {"G": cell.heads, **params}
    problem = found.problem(
        B=cell.batch,
        T=cell.seq_len,
        H=cell.heads,
        d=cell.d_model // cell.heads,
        causal=True,
        level=Level.LAYER,
        **params,
    )
    return Case(problem, found.impls[0].name, Mode.FWD_BWD, "fp32", task=cell)


def causal_mechanisms() -> list[str]:
    return [name for name, mechanism in registry.mechanisms().items() if True in mechanism.causal]


def fake_peak(call, prepare, device):
    """`attnbench.measure.memory.measure`'s shape without the profiler (these tests check training, not memory)."""
    call(None)
    return type("Peak", (), {"allocated_bytes": 1})()


@pytest.mark.parametrize("mechanism", causal_mechanisms())
def test_every_causal_mechanism_trains_as_a_mixer_and_its_core_parameters_learn(mechanism, seed):
    """Built from the registry: every learned tensor of the layer is a parameter, gets a gradient, and a step
    changes it; the output at a position does not depend on later tokens."""
    cell = tiny_cell(seed=seed)
    case = task_case(mechanism, cell)
    model = RecallModel(case.problem, case.impl, cell.vocab, cell.layers, cell.conv_kernel, seed)
    mixer = next(module for module in model.modules() if isinstance(module, RegistryMixer))
    drawn = registry.get(mechanism).make_tensors(case.problem.with_(B=1), torch.float32, "cpu", None)
    assert set(mixer.weights) == set(drawn) - {"x"}
    tokens = torch.randint(1, cell.vocab, (3, cell.seq_len), generator=torch.Generator().manual_seed(seed))
    changed = tokens.clone()
    changed[:, 9:] = (changed[:, 9:] % (cell.vocab - 1)) + 1
    assert torch.allclose(model(tokens)[:, :9], model(changed)[:, :9], atol=1e-5), "a mixer saw a later token"
    before = {name: weight.detach().clone() for name, weight in mixer.weights.items()}
    labels = torch.randint(0, cell.vocab, tokens.shape, generator=torch.Generator().manual_seed(seed + 1))
    train.train_step(model, train.optimizer_for(model, 1e-2), tokens, labels)
    for name, weight in mixer.weights.items():
        assert weight.grad is not None and not torch.equal(weight.detach(), before[name]), name


def test_loss_falls_on_a_tiny_cell_within_seconds(seed):
    cell = tiny_cell(seed=seed, steps=60, eval_every=60)
    setup = make_setup(task_case("mha", cell), "cpu")
    with cpu_threads("cpu"):
        outcome = train.train_rate(setup, 1e-2)
        first = train.loss_of(train.build_model(setup), setup.train.inputs[:64], setup.train.labels[:64]).detach()
    assert outcome.diverged_at is None and len(outcome.step_times_s) == 60
    assert outcome.final_loss < 0.8 * float(first), (outcome.final_loss, float(first))
    assert sum(outcome.step_times_s) < 30


def test_same_seed_same_accuracy_other_seed_other_training(seed):
    cell = tiny_cell(seed=seed, steps=30, eval_every=10)
    first, again = (train.train_rate(make_setup(task_case("mha", cell), "cpu"), 1e-2) for _ in range(2))
    assert first.curve == again.curve and first.final_loss == again.final_loss
    other = train.train_rate(make_setup(task_case("mha", tiny_cell(seed=seed + 1, steps=30)), "cpu"), 1e-2)
    assert other.final_loss != first.final_loss


def test_the_schedule_warms_up_then_decays_to_zero():
    values = [train.schedule(step, 100) for step in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(values[9:])) and values[-1] < 0.01


def test_a_row_reports_the_best_rate_and_every_rate(seed):
    cell = tiny_cell(seed=seed, steps=20, lrs=(1e-2, 3e-4))
    row = task_row(task_case("mha", cell), "cpu", fake_peak)
    assert row["status"] == "ok" and set(row["accuracy_by_lr"]) == {"0.01", "0.0003"}
    assert row["accuracy"] == max(row["accuracy_by_lr"].values())
    assert row["param_count"] == parameter_count(train.build_model(make_setup(task_case("mha", cell), "cpu")))
    assert row["time_ms"] > 0 and row["tokens_per_s"] > 0 and math.isfinite(row["final_loss"])
    assert row["peak_mem_bytes"] == 1


def test_a_rate_that_diverges_is_a_status_not_a_crash(seed, monkeypatch):
    """A loss made infinite (a planted overflow) ends the rate; with every rate diverged the row is an error."""
    cell = tiny_cell(seed=seed, steps=10, lrs=(1e-2,))
    original = train.loss_of
    monkeypatch.setattr(train, "loss_of", lambda model, inputs, labels: original(model, inputs, labels) * math.inf)
    row = task_row(task_case("mha", cell), "cpu", fake_peak)
    assert row["status"] == "error" and row["reason"].startswith("diverged: lr 0.01 diverged")
    assert row["accuracy_by_lr"] == {"0.01": None}
