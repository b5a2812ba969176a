"""Figures of results (time, memory, throughput and speed-up against each swept axis), in stages:

- `style`: how a series looks (colour by mechanism, marker by implementation, line style by run);
- `draw`: one panel's lines, slopes, not-run strip, ceilings, ticks and labels;
- `legend`: the legend of what a figure drew;
- `figures`: the four figures and `plot_results`, which writes them with the scaling summary.
"""
