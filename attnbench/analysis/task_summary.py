"""Task rows (`attnbench.tasks`): one table of accuracy beside speed, and the best mechanism of every cell.

A task row holds the cell it trained (`task`: seq_len, kv_pairs, vocab, d_model, ...), the held-out accuracy
(best over its learning-rate grid), the steps and training time to 99 % accuracy, and the time of one training
step. The scaling analysis never sees these rows (`split_task_rows`): their T is a task setting, not a swept
size. "Best" in a cell is the highest accuracy; mechanisms within `TIE` of it are tied, and the tied one with
the shortest training step is named first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from attnbench.analysis.rows import config_name, format_number

TIE = 0.005  # accuracies this close (half a point) are not told apart: a few hundred held-out queries each
NAME_COLUMNS = ("mechanism", "variant", "shown_params")  # what `config_name` names a mechanism configuration by
CELL_KEYS = (("seq_len", "T"), ("kv_pairs", "kv"), ("vocab", "vocab"), ("d_model", "D"), ("heads", "H"))
TASK_COLUMNS = (
    "run",
    "task",
    "cell",
    "seed",
    "name",
    "impl",
    "dtype",
    "status",
    "accuracy",
    "best_lr",
    "steps_to_target",
    "time_to_target_s",
    "time_ms",
    "tokens_per_s",
    "peak_mem_bytes",
    "param_count",
    "final_loss",
    "reason",
)


def is_task_row(task: Any) -> bool:
    return isinstance(task, Mapping) and bool(task)


def split_task_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows of benchmark cases, task rows) of a prepared frame."""
    if "task" not in frame or frame.empty:
        return frame, frame.iloc[0:0]
    tasks = frame["task"].map(is_task_row).astype(bool)
    return frame[~tasks], frame[tasks]


def cell_label(task: Mapping[str, Any]) -> str:
    """ "mqar T=64 kv=16 vocab=64 D=32 H=1": the settings that tell cells apart at a glance."""
    return " ".join([str(task.get("name", "?"))] + [f"{short}={task.get(key)}" for key, short in CELL_KEYS])


def task_table(tasks: pd.DataFrame) -> pd.DataFrame:
    """One line per task row, `TASK_COLUMNS`, ordered by cell, then accuracy (highest first)."""
    if tasks.empty:
        return pd.DataFrame(columns=TASK_COLUMNS)
    table = pd.DataFrame(
        {
            "run": tasks.get("run", ""),
            "task": [task.get("name") for task in tasks["task"]],
            "cell": [cell_label(task) for task in tasks["task"]],
            "seed": [task.get("seed") for task in tasks["task"]],
            "name": [config_name(*names) for names in zip(*(tasks[c] for c in NAME_COLUMNS), strict=True)],
        },
        index=tasks.index,
    )
    for column in TASK_COLUMNS[5:]:
        table[column] = tasks.get(column)
    for column in TASK_COLUMNS[8:17]:  # accuracy .. final_loss
        table[column] = pd.to_numeric(table[column], errors="coerce")
    table["_cell_order"] = [tuple(task.get(key, 0) for key, _ in CELL_KEYS) for task in tasks["task"]]
    table = table.sort_values(["_cell_order", "accuracy", "time_ms"], ascending=[True, False, True], na_position="last")
    return table.drop(columns="_cell_order").reset_index(drop=True)


def best_per_cell(table: pd.DataFrame) -> pd.DataFrame:
    """Per run, cell and seed: the best accuracy, and `best`: (name, accuracy) of the mechanisms within `TIE` of
    it, the fastest step first."""
    found = []
    for (run, cell, seed), rows in table.groupby(["run", "cell", "seed"], sort=False):
        scored = rows[rows["accuracy"].notna()]
        if scored.empty:
            continue
        top = float(scored["accuracy"].max())
        tied = scored[scored["accuracy"] >= top - TIE].sort_values("time_ms", na_position="last")
        best = list(zip(tied["name"], tied["accuracy"], strict=True))
        found.append({"run": run, "cell": cell, "seed": seed, "accuracy": top, "best": best})
    return pd.DataFrame(found, columns=["run", "cell", "seed", "accuracy", "best"])


def _percent(value: Any) -> str:
    return "" if pd.isna(value) else f"{100 * float(value):.1f}%"


def _cells(row: pd.Series) -> list[str]:
    """One row of the Markdown table."""
    to_target = "" if pd.isna(row["steps_to_target"]) else f"{int(row['steps_to_target'])} steps"
    if to_target and not pd.isna(row["time_to_target_s"]):
        to_target += f", {format_number(float(row['time_to_target_s']))} s"
    accuracy = _percent(row["accuracy"]) if row["status"] == "ok" else f"{row['status']}"
    return [
        row["cell"],
        row["name"],
        row["impl"],
        accuracy,
        (to_target or "not reached") if row["status"] == "ok" else row["reason"] or "",
        "" if pd.isna(row["time_ms"]) else format_number(float(row["time_ms"])),
        "" if pd.isna(row["tokens_per_s"]) else format_number(float(row["tokens_per_s"])),
        "" if pd.isna(row["param_count"]) else str(int(row["param_count"])),
        "" if pd.isna(row["best_lr"]) else f"{row['best_lr']:g}",
    ]


def task_section(frame: pd.DataFrame, md_table: Callable) -> str:
    """The Markdown section on the task rows of a prepared frame ("" when it has none)."""
    table = task_table(split_task_rows(frame)[1])
    if table.empty:
        return ""
    headers = ["cell", "mechanism", "impl", "accuracy", "to 99%", "ms/step", "tokens/s", "params", "best lr"]
    parts = [
        "## Task accuracy\n",
        "Held-out accuracy after training (best over each row's learning-rate grid), the steps and training time "
        "to 99% held-out accuracy, and the median time of one training step (docs/TASKS.md).\n",
        md_table(headers, [_cells(row) for _, row in table.iterrows()]),
    ]
    lines = []
    for best in best_per_cell(table).itertuples():
        seed = f" seed {best.seed}" if table["seed"].nunique() > 1 else ""
        (name, accuracy), others = best.best[0], best.best[1:]
        tied = ", ".join(f"{other} {_percent(value)}" for other, value in others)
        lines.append(f"- {best.cell}{seed}: **{name}** {_percent(accuracy)}" + (f" (tied: {tied})" if tied else ""))
    if lines:
        parts.append("Best per cell (highest accuracy; within half a point is a tie, the fastest step first):\n")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)
