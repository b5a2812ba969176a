"""Stage 2, the run: cases measured one by one in isolated worker processes, rows written as each case ends.

The runner (this process) never imports the measuring code: it starts workers (`attnbench.run.worker`), watches
them from outside and owns the run folder. The modules:

- `runner`: `run_suite` (new runs and resumes), the per-case step (`run_case`) and the stop-signal handling both
  runners share;
- `ab`: the A/B runner, two revisions' mechanisms measured interleaved on one device, then gated;
- `executors`: where the cases run, as events the runner's one driver loop consumes: one worker, or one per
  device (`--devices`); `ray_executor`: one worker actor per GPU of a Ray cluster (`--executor ray`);
- `devices`: what `--devices` names, and the device model (class) that baselines and the gate key on;
- `workers`: `Worker` and `WorkerSlot`, a worker process seen from the runner;
- `folders`: fresh run-folder names, the run's lock (one writer at a time) and torn rows kept aside;
- `meta`: what a run's meta.json says, and the fingerprint that a resume must match;
- `environment`: the device, library versions and git state a run records (light: torch imported on use);
- `worker`: the worker process itself (`python -m attnbench.run.worker`).
"""
