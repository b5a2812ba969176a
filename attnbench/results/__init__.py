"""Stage 4, the results: run folders on disk (`meta.json`, `rows.jsonl`), their loading, and stored baselines."""

from __future__ import annotations

from attnbench.results.files import load

__all__ = ["load"]
