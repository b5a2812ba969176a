"""Scaling analysis of results, in stages:

- `rows`: result rows typed and completed (each row's complexity in T included), filters, configuration names;
- `runs`: run folders found, named and loaded (`load_runs`);
- `series`: series and panels along an x-axis, and which axes the runs swept;
- `fits`: fitted exponents checked against the complexity, and memory walls;
- `crossover`: the length from which a linear-time mechanism beats the quadratic baseline;
- `summary`: all of it as tables and a Markdown report (`summarize`).

Pure pandas/numpy/scipy: matplotlib is never imported here.
"""
