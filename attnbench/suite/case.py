"""One benchmark case, as the suite expands it and the runner measures it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from attnbench.mechanisms.decoding import DECODE_COMPLEXITY
from attnbench.mechanisms.problem import Mode, Problem
from attnbench.results.files import ROW_FIELDS, SCHEMA_VERSION, case_id, timestamp
from attnbench.suite.task import TaskCell

# How a case is timed (`attnbench.measure.timing`): one synchronised call per sample with cold caches, batches
# of calls issued back to back, or replays of a captured CUDA graph.
TIMING_METHODS = ("cold", "back_to_back", "graph")


@dataclass(frozen=True)
class TimingSettings:
    """How a case is timed (recorded in every run's meta.json).

    Warm-up and repetition are time-based, as `triton.testing.do_bench`: the call is repeated for about
    `warmup_ms` untimed, then for about `rep_ms` timed, within `[min_reps, max_reps]` timed samples. On CUDA the
    L2 cache is flushed before every timed sample when `flush_l2` is set (not with `back_to_back`, whose point
    is warm caches). `method` is `cold`, `back_to_back` or `graph` (CUDA only). On CUDA the energy per call is
    read from the driver's energy counter over `energy_s` seconds of repeated calls (0: not measured).
    """

    warmup_ms: float = 25.0
    rep_ms: float = 100.0
    min_reps: int = 5
    max_reps: int = 1000
    flush_l2: bool = True
    method: Literal[TIMING_METHODS] = "cold"
    energy_s: float = 1.0


@dataclass(frozen=True)
class Limits:
    """Per-case limits: a wall-clock budget (a case past it is killed and recorded as `timeout`; on a loaded
    machine it is stretched by the load, `attnbench.measure.contention.case_budget_s`), and the largest float64
    reference the numerics check will run (elements of the largest tensor it would hold); above it the check is
    done at the largest T that fits, and the row says so."""

    case_timeout_s: float = 300.0
    check_numerics: bool = True
    reference_max_elements: int = 1 << 28


@dataclass(frozen=True)
class Case:
    """A mechanism problem, an implementation, a mode and a dtype: one row of results."""

    problem: Problem
    impl: str
    mode: Mode
    dtype: str
    timing: TimingSettings = field(default_factory=TimingSettings)
    limits: Limits = field(default_factory=Limits)
    seed: int = 0
    unsupported: str | None = None  # why the mechanism or impl does not define this case (recorded, not run)
    q_len: int | None = None  # decode: the new tokens of the step (its cache is the problem's T tokens)
    task: TaskCell | None = None  # a task case: train a model with this mechanism's layer, record its accuracy

    def key_fields(self) -> dict[str, Any]:
        """The fields that identify this case in results (see results.KEY_FIELDS)."""
        from attnbench.mechanisms import registry

        p = self.problem
        mechanism = registry.get(p.mechanism)
        fields = {
            "mechanism": p.mechanism,
            "variant": mechanism.variant(p),
            "impl": self.impl,
            "mode": Mode(self.mode).value,
            "level": p.level.value,
            "dtype": self.dtype,
            "causal": p.causal,
            "B": p.B,
            "T": p.T,
            "H": p.H,
            "G": None,
            "D": p.D,
            "d": p.d,
            "params": dict(sorted(p.params.items())),
            "complexity": mechanism.complexity_of(mechanism.variant(p)),
        }
        fields.update(mechanism.derived(p))
        if Mode(self.mode) is Mode.DECODE:  # T is the cache length; the step's time grows as DECODE_COMPLEXITY says
            complexity = DECODE_COMPLEXITY.get(fields["complexity"], fields["complexity"])
            fields.update(q_len=self.q_len, cache_len=p.T, complexity=complexity)
        if self.task is not None:
            fields["task"] = self.task.to_dict()
        return fields

    @property
    def case_id(self) -> str:
        """The id of this case's key, as its rows record it (`attnbench.results.files.case_id`)."""
        return case_id(self.key_fields())

    def row_base(self) -> dict[str, Any]:
        """What every row of this case starts with: the schema version, the case id, the key and derived
        fields, and one column per mechanism parameter."""
        fields = self.key_fields()
        return {"schema_version": SCHEMA_VERSION, "case_id": case_id(fields), **fields, **fields["params"]}

    def empty_row(self) -> dict[str, Any]:
        """The case's row before anything is measured: every row field present (None where nothing is known
        yet), the case's key filled in, and the time it started. Measuring fills it; a case that cannot run
        (unsupported, timed out, crashed) is recorded as this row with its status and reason."""
        row: dict[str, Any] = dict.fromkeys(ROW_FIELDS)
        row.update(self.row_base())
        row["started_at"] = timestamp()
        return row

    def describe(self) -> str:
        """`mha[] core B=1 T=64 H=4 d=32 sdpa fwd fp32`: the case as progress and dry runs print it."""
        text = f"{self.problem.describe()} {self.impl} {Mode(self.mode).value} {self.dtype}"
        if self.q_len is not None:
            text += f" q_len={self.q_len}"
        if self.task is not None:
            text += f" {self.task.name} kv={self.task.kv_pairs} seed={self.task.seed}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """The case as plain JSON data, sent to a worker process and read back there by `from_dict`."""
        p = self.problem
        return {
            "mechanism": p.mechanism,
            "B": p.B,
            "T": p.T,
            "H": p.H,
            "d": p.d,
            "causal": p.causal,
            "level": p.level.value,
            "params": dict(p.params),
            "impl": self.impl,
            "mode": Mode(self.mode).value,
            "dtype": self.dtype,
            "timing": asdict(self.timing),
            "limits": asdict(self.limits),
            "seed": self.seed,
            "unsupported": self.unsupported,
            "q_len": self.q_len,
            "task": self.task.to_dict() if self.task is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Case:
        """Rebuild a case (in a worker process) from `to_dict`; the problem is re-checked by its mechanism."""
        from attnbench.mechanisms import registry

        mechanism = registry.get(data["mechanism"])
        problem = mechanism.problem(
            B=data["B"],
            T=data["T"],
            H=data["H"],
            d=data["d"],
            causal=data["causal"],
            level=data["level"],
            **data["params"],
        )
        return cls(
            problem=problem,
            impl=data["impl"],
            mode=Mode(data["mode"]),
            dtype=data["dtype"],
            timing=TimingSettings(**data["timing"]),
            limits=Limits(**data["limits"]),
            seed=data["seed"],
            unsupported=data.get("unsupported"),
            q_len=data.get("q_len"),
            task=TaskCell.from_dict(data["task"]) if data.get("task") else None,
        )
