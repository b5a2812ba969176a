"""The regression gate: compare two runs (or a run and a stored baseline) case by case, and say what got slower.

Cases are joined on their full key (`attnbench.results.files.case_id`: mechanism, its parameters, impl, mode,
level, dtype, causal, shape); cases present on one side only are listed, and two sides with no case in common
are bad input. A drift every case shares (the median change over all cases, or over designated control cases)
is divided out first. A case **regressed** when all of these hold:

1. its median got slower by more than `threshold` (relative, default 5%) and by more than `floor_us`
   (absolute, default 1 µs): the change is big enough to matter;
2. it is beyond the noise: a one-sided z-test of its log median ratio against the samples' bootstrap error
   (`scipy.stats.bootstrap`) and the between-run drift of one case (the larger of `drift`, measured on the
   runner, and the spread of the suite's own changes), with Benjamini–Hochberg over the cases at false discovery
   rate `alpha` (default 0.01). In a paired A/B run the one-sided Wilcoxon signed-rank test of the per-round
   log ratios must also say HEAD is slower at `alpha`: samples of one round share the machine's state, so there
   the round, not the sample, is the independent unit.

Improvements are found the same way, mirrored. A change past the threshold that is not beyond the noise is
`noisy` (shown, never a failure). docs/METHODOLOGY.md gives the reasons and the simulated error rates. Numerics
and statuses are gated too: a case that passed in BASE and fails its numerics in HEAD (`numerics_broke`), or that
ran in BASE and ends in HEAD as oom, error, crash, timeout or unsupported (`broke`), fails the gate whatever its
speed.

Exit codes: 0 clean, 1 regression, 2 bad input. The modules, in the order a comparison uses them:

- `settings`: `GateSettings` (threshold, floor, alpha, ...), the verdicts and exit codes, `CompareError`;
- `sides`: a run folder or baseline read as one side (`load_side`, `resolve_base`), ignore patterns, case labels;
- `stats`: one case's `Change`, its bootstrap error, the round-level test and its verdict (`timing_verdict`);
- `noise`: the suite at once: shared drift divided out, between-run drift, tests and their correction
  (`suite_changes`);
- `verdicts`: every case of two sides compared (`compare`, `compare_paths`) into a `Comparison`;
- `report`: the terminal, markdown and JSON reports, and `gate` (compare, then report).

The gate reads results only (`attnbench.results`); it never runs anything. The A/B runner that measures two
revisions for it is `attnbench.run.ab`.
"""
