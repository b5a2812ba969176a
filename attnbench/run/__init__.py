"""Stage 2, the run: cases measured one by one in isolated worker processes, rows written as each case ends.

The runner (this process) never imports the measuring code: it starts workers (`attnbench.run.worker`), watches
them from outside and owns the run folder. The A/B runner measures two revisions' mechanisms interleaved.
"""
