"""Scaling analysis of results: series, fitted exponents, crossovers, memory walls and their summary."""
