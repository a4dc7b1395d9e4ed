"""From an executed notebook to a shareable HTML report.

* :func:`render_html`: nbconvert's ``lab`` template without code, prompts or CDN
  scripts (require.js, MathJax, mermaid, widgets), images embedded, the alt text
  of a PNG taken from its output metadata, a readable page width, and a
  placeholder where the run puts the navigation (index, previous, next).
* :func:`check_outputs`: what must not reach a reader: an error output, a stderr
  output, or raw Python output (a traceback, a temporary or install path, an
  object or dict repr, a bare Series printout). The runner fails such a report.
* :func:`emitted`: what the notebook emitted for the landing page through
  :mod:`cxex_lab.present` (custom JSON mime types).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "NAV_PLACEHOLDER",
    "NAV_BOTTOM_PLACEHOLDER",
    "FINDINGS_MIME",
    "STUDY_MIME",
    "render_html",
    "notebook_title",
    "check_outputs",
    "emitted",
    "insert_nav",
    "nav_html",
]

#: Where the run inserts the navigation links (the cached HTML keeps the placeholder).
NAV_PLACEHOLDER = "<!--cxex-nav-->"
NAV_BOTTOM_PLACEHOLDER = "<!--cxex-nav-bottom-->"
from cxex_lab.present import FINDINGS_MIME, STUDY_MIME  # noqa: E402 - emitted beside the visible output

REPORT_CSS = """
body.jp-Notebook{max-width:62rem;margin:0 auto;padding:0 1rem 3rem}
.jp-OutputArea-output{overflow-x:auto;max-width:100%}
.jp-OutputArea-output img{max-width:100%;height:auto}
.jp-RenderedHTMLCommon table{max-width:100%}
nav.cxex-nav{display:flex;flex-wrap:wrap;gap:.4rem 1.2rem;font:14px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;
 padding:.7rem 0;margin-bottom:.5rem;border-bottom:1px solid #d0d7de}
nav.cxex-nav.bottom{border-bottom:0;border-top:1px solid #d0d7de;margin-top:2rem}
nav.cxex-nav a{color:#0969da;text-decoration:none}nav.cxex-nav a:hover{text-decoration:underline}
nav.cxex-nav .spacer{flex:1}
"""

_TEMPLATE = """\
{%- extends 'lab/index.html.j2' -%}
{#- cxex-lab: a self-contained report - nothing is fetched from a CDN. -#}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block extra_css -%}<style type="text/css">{{ resources.cxex_css }}</style>{%- endblock extra_css -%}
{%- block body_header -%}
<body class="jp-Notebook" data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">
{{ resources.cxex_nav }}
<main>
{%- endblock body_header -%}
{%- block body_footer -%}
</main>
{{ resources.cxex_nav_bottom }}
</body>
{%- endblock body_footer -%}
{% block data_png scoped %}
<div class="jp-RenderedImage jp-OutputArea-output {{ extra_class }}">
<img src="data:image/png;base64,{{ output.data['image/png'] | escape_html }}" alt="{{ (output.metadata.get('image/png', {}) or {}).get('alt', '') | escape_html }}">
</div>
{%- endblock data_png %}
"""

# what nbconvert's HTML exporter shows of a display bundle, in order of preference
_PRIORITY = ("application/vnd.jupyter.widget-view+json", "application/javascript", "text/html", "text/markdown",
             "image/svg+xml", "text/latex", "image/png", "image/jpeg", "text/plain")

_RAW_PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    ("a traceback", re.compile(r"Traceback \(most recent call last\)")),
    ("a Python object repr", re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>|\bobject at 0x[0-9a-fA-F]{6,}")),
    ("a temporary or install path", re.compile(
        r"(?:/tmp/|/var/folders/|/private/var/|[\\/]site-packages[\\/]|[\\/]dist-packages[\\/]|\\AppData\\Local\\Temp\\"
        r"|ipykernel_\d+)")),
)
# only in outputs shown as plain text (an HTML table may legitimately hold braces)
_PLAIN_RAW_PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    ("a Python dict", re.compile(r"\{\s*['\"][^'\"\n]{1,80}['\"]\s*:")),
    ("a Python list", re.compile(r"(?m)^\[\s*['\"]")),
    ("a numpy scalar repr", re.compile(r"\bnp\.(?:float|int|bool_|str_)\w*\(")),
    ("a raw pandas Series", re.compile(r"(?m)^(?:Name: .*, )?dtype: \w+$")),
)


def notebook_title(nb: Any, fallback: str) -> str:
    """The text of the notebook's first ``# `` heading (``fallback`` when there is none)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def _source_text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def _shown_mime(data: Mapping[str, Any]) -> str | None:
    for mime in _PRIORITY:
        if mime in data:
            return mime
    return None


def _first_line(text: str, limit: int = 300) -> str:
    """The message of a warning or error text: its meaningful line, without paths."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:  # "…/x.py:12: UserWarning: message" -> "UserWarning: message"
        m = re.search(r"\b([A-Z]\w*(?:Warning|Error|Exception)): (.*)", ln)
        if m:
            msg = f"{m.group(1)}: {m.group(2)}"
            break
    else:
        msg = lines[0] if lines else ""
    msg = re.sub(r"(?:/[\w.+-]+)+/([\w.+-]+)", r"\1", msg)  # no absolute paths in the index
    msg = " ".join(msg.split())
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def check_outputs(nb: Any) -> tuple[str, str] | None:
    """The first thing in an executed notebook's outputs a reader must not see.

    Returns ``(reason, message)`` or None when clean. ``reason`` is ``"error"``
    (an error output), ``"stderr"`` (a stderr stream: a warning, a log line) or
    ``"raw"`` (raw Python output, see the module notes). The message names the
    cell (its number among all cells, counting from 1) and quotes the first
    meaningful line, without paths.
    """
    for i, cell in enumerate(nb.cells, start=1):
        if cell.cell_type != "code" or "remove-cell" in cell.get("metadata", {}).get("tags", []):
            continue
        removed_output = bool({"remove-output", "remove_output"} & set(cell.get("metadata", {}).get("tags", [])))
        for out in cell.get("outputs", []):
            kind = out.get("output_type")
            if kind == "error":
                return "error", f"{out.get('ename', 'Error')}: {_first_line(str(out.get('evalue', '')))} (cell {i})"
            if removed_output:
                continue
            if kind == "stream":
                text = _source_text(out.get("text"))
                if out.get("name") == "stderr" and text.strip():
                    return "stderr", f"stderr output in cell {i}: {_first_line(text)}"
                shown, plain = text, True
            elif kind in ("display_data", "execute_result"):
                data = out.get("data", {})
                mime = _shown_mime(data)
                if mime is None:
                    continue
                shown, plain = _source_text(data[mime]), mime == "text/plain"
                if mime.startswith("image/"):
                    continue
            else:
                continue
            for what, rx in _RAW_PATTERNS + (_PLAIN_RAW_PATTERNS if plain else ()):
                m = rx.search(html.unescape(shown))
                if m:
                    return "raw", (f"raw output in cell {i}: {what} is shown; present it as a table, a note or in "
                                   f"words (cxex_lab.present)")
    return None


def emitted(nb: Any) -> dict[str, list]:
    """What the notebook emitted for the runner: ``{"findings": [...], "study": [...]}``.

    Each entry is the JSON payload of one ``present.show_findings`` /
    ``present.emit_study`` call, in the order of the notebook.
    """
    out: dict[str, list] = {"findings": [], "study": []}
    for cell in nb.cells:
        for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = o.get("data", {})
            if FINDINGS_MIME in data:
                out["findings"].append(_as_json(data[FINDINGS_MIME]))
            if STUDY_MIME in data:
                out["study"].append(_as_json(data[STUDY_MIME]))
    return out


def _as_json(value: Any) -> Any:
    import json

    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return json.loads(json.dumps(value))  # NotebookNode -> plain dict / list


def render_html(nb_path: str | Path, segment: str | None = None, nav: str = NAV_PLACEHOLDER) -> str:
    """Render an executed notebook to a self-contained HTML report without code.

    Uses nbconvert's ``lab`` template with inputs and prompts excluded, images
    embedded and the CDN scripts left out. Cells tagged ``remove-cell`` are
    dropped and ``remove-output`` cells lose their outputs. ``nav`` goes to the
    top and bottom of the page (by default a placeholder the run replaces).
    """
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    nb = nbformat.read(str(nb_path), as_version=4)
    title = notebook_title(nb, Path(nb_path).stem)
    if segment is not None and segment != "all":
        title = f"{title} [{segment}]"
    elif segment == "all":
        title = f"{title} [all]"
    nb.metadata["title"] = title
    exporter = HTMLExporter(
        extra_loaders=[jinja2.DictLoader({"cxex_offline.html.j2": _TEMPLATE})],
        template_file="cxex_offline.html.j2",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )
    exporter.register_preprocessor(
        TagRemovePreprocessor(remove_cell_tags={"remove-cell", "remove_cell"},
                              remove_all_outputs_tags={"remove-output", "remove_output"}),
        enabled=True,
    )
    bottom = NAV_BOTTOM_PLACEHOLDER if nav == NAV_PLACEHOLDER else nav
    body, _ = exporter.from_notebook_node(
        nb, resources={"metadata": {"name": title}, "cxex_css": REPORT_CSS, "cxex_nav": nav, "cxex_nav_bottom": bottom})
    return body


def nav_html(index: str = "index.html", prev: tuple[str, str] | None = None, next_: tuple[str, str] | None = None,
             bottom: bool = False) -> str:
    """The navigation bar: back to the index, previous and next report (``(href, title)``)."""
    esc = html.escape
    parts = [f'<a href="{esc(index)}" rel="index">&larr; All reports</a>', '<span class="spacer"></span>']
    if prev:
        parts.append(f'<a href="{esc(prev[0])}" rel="prev">&lsaquo; Previous: {esc(prev[1])}</a>')
    if next_:
        parts.append(f'<a href="{esc(next_[0])}" rel="next">Next: {esc(next_[1])} &rsaquo;</a>')
    cls = "cxex-nav bottom" if bottom else "cxex-nav"
    return f'<nav class="{cls}" aria-label="Reports">{"".join(parts)}</nav>'


def insert_nav(text: str, top: str, bottom: str) -> str:
    """Replace the navigation placeholders of a rendered report."""
    return (text.replace(NAV_PLACEHOLDER, top, 1)
                .replace(NAV_BOTTOM_PLACEHOLDER, bottom, 1))


def sequence_nav(items: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """For reports ``[(href, title), ...]`` in order: ``(top, bottom)`` navigation of each."""
    out = []
    for i, _ in enumerate(items):
        prev = items[i - 1] if i > 0 else None
        nxt = items[i + 1] if i + 1 < len(items) else None
        out.append((nav_html(prev=prev, next_=nxt), nav_html(prev=prev, next_=nxt, bottom=True)))
    return out
