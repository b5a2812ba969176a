"""Figures of results: time, memory, throughput and speed-up against each swept axis."""
