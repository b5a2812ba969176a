"""How pages render: the package's Jinja2 templates (with their stylesheet and script, shipped as package data)."""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def environment():
    """The Jinja2 environment of the package's templates: HTML escaped by default, undefined names an error."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("attnbench.report", "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(name: str, **context: Any) -> str:
    """Render the template `name` with `context`."""
    return environment().get_template(name).render(**context)


def markdown_html(text: str, drop_title: bool = True) -> str:
    """Markdown (with tables) as HTML, headings one level down to sit under the page's sections (and the
    document's own title dropped with `drop_title`); raw HTML in the text is escaped, not passed through."""
    from markdown_it import MarkdownIt

    lines = [line for line in text.splitlines() if not (drop_title and line.startswith("# "))]
    lines = ["#" + line if line.startswith("#") else line for line in lines]
    return MarkdownIt("commonmark", {"html": False}).enable("table").render("\n".join(lines))
