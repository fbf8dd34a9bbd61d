"""``report.html``: the Markdown report as one self-contained page, its figures inline (base64 PNG), nothing fetched
from elsewhere. Rendered by markdown-it-py (CommonMark plus tables), which rich already requires."""
from __future__ import annotations

import base64
import html
import mimetypes
from pathlib import Path

from markdown_it import MarkdownIt

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.45; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
blockquote { border-left: 4px solid #e45756; margin: 1rem 0; padding: 0.25rem 1rem; background: #fff5f5; }
img { max-width: 100%; }
code { background: #f4f4f4; padding: 0 0.2rem; }
"""


def inline_image(run_dir: Path):
    """A markdown-it image rule that embeds a file of the run directory as a data URI; an image that is not such
    a file keeps only its alt text (the page references nothing outside itself)."""

    def render(renderer, tokens, idx, options, env):
        token = tokens[idx]
        alt = html.escape(token.content)
        source = run_dir / str(token.attrGet("src") or "")
        try:
            inside = source.resolve().is_relative_to(run_dir.resolve()) and source.is_file()
        except OSError:
            inside = False
        if not inside:
            return f"<em>[figure {alt} not found]</em>"
        kind = mimetypes.guess_type(source.name)[0] or "application/octet-stream"
        data = base64.b64encode(source.read_bytes()).decode("ascii")
        return f'<img src="data:{kind};base64,{data}" alt="{alt}">'

    return render


def html_page(markdown_text: str, run_dir: Path, title: str) -> str:
    """The page of ``markdown_text`` (raw HTML in it is shown as text), its figures read from ``run_dir``."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    md.add_render_rule("image", inline_image(run_dir))
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n{md.render(markdown_text)}</body>\n</html>\n")
