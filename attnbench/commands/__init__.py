"""One click command per module; `attnbench.cli` registers them. Heavy imports stay inside the commands."""
