"""The HTML report: one self-contained page of one or several runs (`build_report`, what `attnbench report`
writes), and the gate's verdicts as the same kind of page (`compare_page`, `attnbench compare --html`).

Stages: `winners` (who wins at each T), `cases` (the sortable, filterable table of every row), `repro` (the
command that re-runs one case), `figures` (the plots' figures as inline SVG), `render` (the Jinja2 templates
under `templates/`), `page` and `gate_page` (the two pages).
"""
