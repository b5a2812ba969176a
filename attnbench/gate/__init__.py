"""The regression gate: compare two runs (or a run and a stored baseline) case by case, and say what got slower.

Cases are joined on their full key (`attnbench.results.files.case_id`: mechanism, its parameters, impl, mode,
level, dtype, causal, shape); cases present on one side only are listed. A case **regressed** when all of these
hold:

1. its median got slower by more than `threshold` (relative, default 5%) and by more than `floor_us`
   (absolute, default 1 µs): the change is big enough to matter;
2. the one-sided Mann–Whitney U test of the raw timing samples says HEAD is slower at `alpha` (default 0.01),
   and the bootstrap interval (`confidence`, default 95%) of the ratio of medians lies above 1: the change is
   beyond the noise of the samples. In a paired A/B run the one-sided Wilcoxon signed-rank test of the
   per-round log ratios must also say HEAD is slower at `alpha`: samples of one round share the machine's
   state, so there the round, not the sample, is the independent unit.

Improvements are found the same way, mirrored. A change past the threshold that is not beyond the noise is
`noisy` (shown, never a failure). The threshold is what absorbs run-to-run drift, which samples taken within one
run cannot see; docs/REGRESSION.md shows the numbers behind these defaults. Numerics and statuses are gated too:
a case that passed in BASE and fails its numerics in HEAD (`numerics_broke`), or that ran in BASE and ends in
HEAD as oom, error, crash, timeout or unsupported (`broke`), fails the gate whatever its speed.

Exit codes: 0 clean, 1 regression, 2 bad input. The modules, in the order a comparison uses them:

- `settings`: `GateSettings` (threshold, floor, alpha, ...), the verdicts and exit codes, `CompareError`;
- `sides`: a run folder or baseline read as one side (`load_side`, `resolve_base`), ignore patterns, case labels;
- `stats`: the timing change of one case and its verdict (`timing_change`, `timing_verdict`);
- `verdicts`: every case of two sides compared (`compare`, `compare_paths`) into a `Comparison`;
- `report`: the terminal, markdown and JSON reports, and `gate` (compare, then report).

The gate reads results only (`attnbench.results`); it never runs anything. The A/B runner that measures two
revisions for it is `attnbench.run.ab`.
"""
