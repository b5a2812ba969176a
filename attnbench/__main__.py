"""`python -m attnbench`: the `attnbench` command."""

from attnbench.cli import main

main()
