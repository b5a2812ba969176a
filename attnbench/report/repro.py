"""The command that re-runs one case of a run: the run's own suite file and options, narrowed to that case.

A case is narrowed with the options `attnbench run` already has: `--only` picks the mechanism, its variant and
its other parameters (`tpa[R_k=2,R_v=2]`: two entries of one mechanism may differ only there), `--impl` the
implementation, and `--set` pins the mode, level, dtype, causal flag and shape to the case's single values.
The run's own `--set` values come first, so its timing and limits are kept, and the case's values override its
sweep. `attnbench show RUN --repro CASE` prints the command after checking, by expanding the suite
again, that it selects exactly this case (see `attnbench.cli.show`).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

SHAPE_AXES = ("B", "T", "H", "d")
# Suite keys the case pins: a run's own `--set` of one of these is left out (the case's value replaces it), and of
# D and tokens too, which d and B replace.
SETTINGS_SECTIONS = ("timing", "limits")  # what a case's measurement depends on besides its key
PINNED_KEYS = {"modes", "levels", "dtypes", "causal", "q_len", *SHAPE_AXES, "D", "tokens"}


class ReproError(ValueError):
    """A row or run that does not say enough to re-run its case (no suite path, a row without its key)."""


def mechanism_label(row: Mapping[str, Any]) -> str:
    """What `--only` matches the row's case by: "name:variant" for a variant, else the name."""
    variant = row.get("variant") or ""
    return f"{row['mechanism']}:{variant}" if variant else str(row["mechanism"])


def only_label(row: Mapping[str, Any]) -> str:
    """What `--only` selects exactly the row's mechanism entry by: its label and, in a bracket, every parameter
    other than the variant ("tpa[R_k=2,R_v=2]")."""
    own = ",".join(f"{key}={value}" for key, value in (row.get("params") or {}).items() if key != "variant")
    return mechanism_label(row) + (f"[{own}]" if own else "")


def case_overrides(row: Mapping[str, Any]) -> list[str]:
    """The `--set` values that pin a suite to the row's mode, level, dtype, causal flag, shape and (for a decode
    step) new tokens."""
    missing = [key for key in ("mode", "level", "dtype", "causal", *SHAPE_AXES) if row.get(key) is None]
    if missing:
        raise ReproError(f"case {row.get('case_id')}: the row has no {', '.join(missing)}")
    causal = "true" if row["causal"] else "false"
    pinned = [f"modes={row['mode']}", f"levels={row['level']}", f"dtypes={row['dtype']}", f"causal={causal}"]
    if row.get("q_len") is not None:  # a decode step's new tokens, part of its case key
        pinned.append(f"q_len={int(row['q_len'])}")
    return pinned + [f"{axis}={int(row[axis])}" for axis in SHAPE_AXES]


def repro_arguments(meta: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    """The suite path, device, overrides (the run's, then the case's), `--only` and `--impl` of the command
    that re-runs `row`'s case of the run described by `meta`."""
    suite = meta.get("suite") or {}
    if not suite.get("path"):
        raise ReproError("the run's meta.json does not record its suite file (suite.path)")
    selection = meta.get("selection") or {}
    if "overrides" in selection:
        settings = _kept(selection["overrides"] or [])
    else:  # a run started from Python, not the command line: its settings as resolved, key by key
        settings = resolved_settings(suite.get("resolved") or {})
    return {
        "suite": str(suite["path"]),
        "device": suite.get("device") or selection.get("device") or "auto",
        "overrides": [*settings, *case_overrides(row)],
        "only": [only_label(row)],
        "impls": [str(row["impl"])],
    }


def repro_command(meta: Mapping[str, Any], row: Mapping[str, Any], out_dir: str = "results") -> str:
    """The shell command that re-runs `row`'s case into a new run folder under `out_dir`."""
    args = repro_arguments(meta, row)
    words = ["attnbench", "run", args["suite"], "--device", args["device"], "-o", out_dir]
    words += ["--only", ",".join(args["only"]), "--impl", ",".join(args["impls"])]
    for text in args["overrides"]:
        words += ["--set", text]
    return shlex.join(words)


def _kept(overrides: list[str]) -> list[str]:
    """The run's own `--set` values that the case does not pin (its timing, limits, numerics settings)."""
    return [text for text in overrides if text.partition("=")[0].strip() not in PINNED_KEYS]


def resolved_settings(resolved: Mapping[str, Any]) -> list[str]:
    """`--set` values for every timing and limits setting of a resolved suite ("timing.rep_ms=3.0")."""
    return [
        f"{section}.{key}={_yaml_scalar(value)}"
        for section in SETTINGS_SECTIONS
        for key, value in (resolved.get(section) or {}).items()
        if value is not None
    ]


def _yaml_scalar(value: Any) -> str:
    """A setting as `--set` parses it back: booleans in YAML's spelling, anything else as text."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)
