"""`python -m attnbench.cli`: the `attnbench` command."""

from attnbench.cli import main

main()
