"""Stage 1, the suite: a YAML file read, validated and expanded into the cases of a run.

`attnbench.suite.load.load_suite` is the entry point; `attnbench.suite.case` holds what one case is. Nothing here
measures anything.
"""
