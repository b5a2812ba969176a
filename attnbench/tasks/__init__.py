"""Task benchmarks: train a small model per mechanism and record what it can learn beside speed and memory.

`data` draws multi-query associative recall sequences, `model` builds the model around any registered
mechanism's layer, `train` trains and evaluates it at one learning rate, and `run` turns one task case into its
result row in the worker (`attnbench.measure.case` hands task cases here). docs/TASKS.md has the protocol.
"""
