"""What a chapter's code cells call to put results into the page: the package's own source
(:func:`show_source`), glued numbers (:func:`glue`), a chapter's claims table glued for its prose and the
ledger (:func:`record`, shown as a :class:`ClaimsTable`), and a table that fits the page column (:func:`table`)."""

from __future__ import annotations

import html
import importlib
import inspect
import json
import re
import textwrap

import pandas as pd
from IPython.display import Markdown, Pretty

from robustnb import ledger, stats


def show_source(*objs):
    """Display the package's own source of functions or classes as highlighted code in the page, so the book
    shows the algorithm it teaches and cannot drift from it. Returns an IPython ``Markdown`` object."""
    blocks = []
    for obj in objs:
        target = inspect.unwrap(obj)
        where = f"{target.__module__}.{target.__qualname__}"
        code = textwrap.dedent(inspect.getsource(target)).rstrip()
        blocks.append(f"`{where}`\n\n```python\n{code}\n```")
    return Markdown("\n\n".join(blocks))


def glue(name: str, value) -> None:
    """MyST-NB's ``glue`` without displaying the value: the prose inserts it with ``{glue:text}`name```.
    Outside a book build without myst-nb (Colab), nothing happens: the prose then shows the role."""
    try:
        from myst_nb import glue as _glue
    except ImportError:  # pragma: no cover - only where myst-nb is not installed
        return
    _glue(name, value, display=False)


def record(claims=None, **numbers):
    """Glue a chapter's measured results for its prose: every claim row of ``claims`` (a frame with
    :data:`robustnb.stats.CLAIM_COLUMNS`) as ``<claim_id>`` (ours, with its interval) and
    ``<claim_id>_verdict``, ``<claim_id>_holm`` and ``<claim_id>_power``, and every keyword as ``<name>`` (already
    formatted strings, or numbers). Returns the claims for the page: a :class:`ClaimsTable` (a frame with columns
    claim, with its role unless primary, paper, source, measure, ours, verdict, holm, power, in words a reader
    follows: :func:`for_readers`), which displays as a table that fits the page column."""
    for name, value in numbers.items():
        glue(name, value)
    if claims is None:
        return None
    for row in claims.itertuples():
        glue(row.claim_id, row.ours)
        glue(f"{row.claim_id}_verdict", row.verdict)
        glue(f"{row.claim_id}_holm", row.holm or ("not tested" if row.role == "primary" else "not counted"))
        glue(f"{row.claim_id}_power", row.power or "not a primary claim")
    # the whole table, for the ledger's summary and forest plots (robustnb.ledger), as JSON text: a notebook's
    # glued outputs may only hold text
    rows = ledger.ledger_rows(claims, declared_claims(claims["chapter"]))
    glue(ledger.GLUE_KEY, Pretty(json.dumps(rows, allow_nan=False)))
    return ClaimsTable.of(claims)


NOT_MEASURED = stats.UNMEASURED  # what a claim this run did not measure reads


def declared_claims(chapter_names) -> dict:
    """The ``PAPER_CLAIMS`` of the chapters named (claim id -> PaperClaim)."""
    out = {}
    for chapter in dict.fromkeys(chapter_names):
        out.update(getattr(importlib.import_module(f"robustnb.chapters.{chapter}"), "PAPER_CLAIMS", {}))
    return out


# ------------------------------------------------------------------------ tables that fit the page column
#: what the papers' summaries are called where a claim's text says where a figure is (or is not)
_READER_WORDS = (
    (re.compile(r"\s*\((?:\.\./)+shared/papers/[^)\s]*\)"), ""),          # "(../shared/papers/002_....txt)"
    (re.compile(r"\s*\((?:\.\./)+shared/papers\)"), ""),                   # "TL;DR (../shared/papers)"
    (re.compile(r"\((?:\.\./)+shared/papers(?: summary)?:\s*"), "("),      # "(../shared/papers: 'up to 95%')"
    (re.compile(r"(?:\.\./)+shared/papers(?:/\S*)?"), "the paper's summary"),
    (re.compile(r"\bno figure in the summary\b"), "the paper's summary gives no figure"),
    (re.compile(r"\bnot (in|stated in) (?:our|the) summary\b"), r"not \1 the paper's summary"),
    (re.compile(r"\bour summary\b"), "the paper's summary"),
)


def for_readers(text) -> str:
    """A claim's text as a reader of the page should see it: no path of the builder's (``../shared/papers/...``)
    and "the paper's summary" (the summary of the paper the book works from: title, abstract, key results) for
    the builder's "our summary". Anything but a string is returned as its ``str``."""
    text = "" if text is None else str(text)
    for pattern, words in _READER_WORDS:
        text = pattern.sub(words, text)
    return re.sub(r" {2,}", " ", text).strip()


#: a claims table's columns on the page: (header, width in % of the table); the verdict and Holm stay in view
CLAIMS_LAYOUT = (("claim", 35), ("the paper's figure", 25), ("ours (95% interval)", 16), ("verdict", 14),
                 ("Holm", 10))
#: the look of the page's tables where the book's stylesheet (:func:`stylesheet`) is missing (Jupyter, Colab)
_TABLE_STYLE = "border-collapse: collapse; font-size: 0.85em; line-height: 1.35;"
_CELL_STYLE = ("text-align: left; vertical-align: top; white-space: normal; overflow-wrap: break-word; "
               "padding: 0.35em 0.45em; border-bottom: 1px solid #dde1e8;")


def _cell(tag: str, inner: str, cls: str = "", style: str = "") -> str:
    attrs = (f' class="{cls}"' if cls else "") + f' style="{_CELL_STYLE}{style}"'
    return f"<{tag}{attrs}>{inner}</{tag}>"


def _verdict_style(verdict: str) -> str:
    colour = ledger.VERDICT_COLOURS.get(verdict)
    return f" background-color: {colour}33; box-shadow: inset 4px 0 0 {colour}; font-weight: 600;" if colour else ""


class ClaimsTable(pd.DataFrame):
    """A chapter's claims as :func:`record` returns them: a frame (columns :data:`COLUMNS`, in words a reader
    follows, so code that reads it as a frame still works) that displays as a table fitting a ~650 px page
    column: claim (its role tagged unless primary; where the paper says it, what we measure and the power folded
    below it), the paper's figure, ours, verdict (coloured as in the forest plots: :func:`robustnb.ledger.css_class`)
    and Holm, every text whole and wrapped, no index. ``caption``: a title above the table."""

    COLUMNS = ("claim", "paper", "source", "measure", "ours", "verdict", "holm", "power")
    _metadata = ["roles", "caption"]

    @property
    def _constructor(self):  # a slice or a computation on it is a plain frame
        return pd.DataFrame

    @classmethod
    def of(cls, claims: pd.DataFrame, caption: str = "") -> ClaimsTable:
        """The table of a claims frame (:data:`robustnb.stats.CLAIM_COLUMNS`)."""
        roles = [str(r) for r in claims["role"]]
        shown = pd.DataFrame({
            "claim": [f"{for_readers(c)} ({r})" if r != "primary" else for_readers(c)
                      for c, r in zip(claims["claim"], roles)],
            **{c: [for_readers(v) for v in claims[c]] for c in cls.COLUMNS[1:]}})
        out = cls(shown)
        out.roles, out.caption = roles, caption
        return out

    def titled(self, caption: str) -> ClaimsTable:
        """The same table with ``caption`` above it."""
        out = ClaimsTable(pd.DataFrame(self))
        out.roles, out.caption = list(self.roles), caption
        return out

    def _rows(self):
        """Per claim: (claim without its role, role, row)."""
        roles = getattr(self, "roles", None) or ["primary"] * len(self)
        for role, row in zip(roles, self.itertuples(index=False)):
            claim = row.claim.removesuffix(f" ({role})") if role != "primary" else row.claim
            yield claim, role, row

    @staticmethod
    def _holm(row, role: str) -> str:
        return row.holm or ("not tested" if role == "primary" else "not counted")

    def _repr_html_(self) -> str:
        e = html.escape
        cols = "".join(f'<col style="width: {w}%">' for _, w in CLAIMS_LAYOUT)
        head = "".join(_cell("th", e(name), ledger.css_class("verdict") if name == "verdict" else "",
                             "font-weight: 600;") for name, _ in CLAIMS_LAYOUT)
        body = []
        for claim, role, row in self._rows():
            tag = "" if role == "primary" else (f' <span class="robustnb-role" style="font-size: 0.85em; '
                                                f'color: #555; white-space: nowrap;">({e(role)})</span>')
            folded = [("where the paper says it", row.source), ("what we measure", row.measure),
                      ("power", row.power if role == "primary" else "")]
            more = "".join(f"<dt style='font-weight: 600;'>{e(k)}</dt><dd style='margin: 0 0 0.3em 0.8em;'>{e(v)}</dd>"
                           for k, v in folded if v)
            details = (f'<details class="robustnb-claim-details"><summary style="cursor: pointer; color: #555; '
                       f'font-size: 0.9em;">source and measure</summary><dl style="margin: 0.2em 0;">{more}</dl>'
                       f"</details>") if more else ""
            body.append("<tr>" + _cell("td", f"{e(claim)}{tag}{details}", "robustnb-claim")
                        + _cell("td", e(row.paper)) + _cell("td", e(row.ours))
                        + _cell("td", e(row.verdict), ledger.css_class(row.verdict), _verdict_style(row.verdict))
                        + _cell("td", e(self._holm(row, role))) + "</tr>")
        caption = (f'<caption style="caption-side: top; text-align: left; font-weight: 600; padding: 0.3em 0;">'
                   f"{e(self.caption)}</caption>") if getattr(self, "caption", "") else ""
        return (f'<table class="robustnb-claims" style="table-layout: fixed; width: 100%; {_TABLE_STYLE}">'
                f"{caption}<colgroup>{cols}</colgroup><thead><tr>{head}</tr></thead>"
                f"<tbody>{''.join(body)}</tbody></table>")

    def __repr__(self) -> str:
        lines = [self.caption] if getattr(self, "caption", "") else []
        for claim, role, row in self._rows():
            lines += [f"- {claim}" + ("" if role == "primary" else f" ({role})"),
                      f"    paper: {row.paper}",
                      f"    ours: {row.ours} | verdict: {row.verdict} | Holm: {self._holm(row, role)}"]
        return "\n".join(lines) if lines else "(no claims)"


class Table:
    """A frame shown as an HTML table that fits the page column: no index, headers and text wrapped, numbers
    as ``float_format``, two header rows where the frame's columns are pairs (a ``MultiIndex``), and, where it
    is still wider than the column, a horizontal scrollbar right below it. ``title``: a caption above it."""

    def __init__(self, frame: pd.DataFrame, title: str | None = None, float_format: str = "{:.3g}"):
        self.frame, self.title, self.float_format = frame, title, float_format

    def _text(self, v) -> str:
        if isinstance(v, float):
            return "" if pd.isna(v) else self.float_format.format(v)
        return "" if v is None else str(v)

    #: from this many columns on, the text is set smaller (most such tables then fit a 650 px column)
    WIDE = 9

    def _size(self) -> str:
        return " font-size: 0.78em;" if len(self.frame.columns) >= self.WIDE else ""

    def _repr_html_(self) -> str:
        e = html.escape
        f = self.frame
        levels = f.columns.nlevels
        head = []
        for level in range(levels):  # a header row per level; repeated neighbours merged
            names = [c if levels == 1 else c[level] for c in f.columns]
            if levels > 1 and level < levels - 1:
                cells, k = [], 0
                while k < len(names):
                    span = 1
                    while k + span < len(names) and names[k + span] == names[k]:
                        span += 1
                    cells.append(f'<th colspan="{span}" style="{_CELL_STYLE} text-align: center;">'
                                 f"{e(str(names[k]))}</th>")
                    k += span
            else:
                cells = [_cell("th", e(str(n))) for n in names]
            head.append("<tr>" + "".join(cells) + "</tr>")
        body = ["<tr>" + "".join(_cell("td", e(self._text(v))) for v in row) + "</tr>"
                for row in f.itertuples(index=False)]
        caption = (f'<caption style="caption-side: top; text-align: left; font-weight: 600; padding: 0.3em 0;">'
                   f"{e(self.title)}</caption>") if self.title else ""
        return (f'<div class="robustnb-table-scroll" style="overflow-x: auto; max-width: 100%;">'
                f'<table class="robustnb-table" style="{_TABLE_STYLE}{self._size()}">{caption}'
                f'<thead>{"".join(head)}</thead>'
                f"<tbody>{''.join(body)}</tbody></table></div>")

    def __repr__(self) -> str:
        return (f"{self.title}\n" if self.title else "") + self.frame.to_string(index=False)


def table(frame: pd.DataFrame, title: str | None = None, float_format: str = "{:.3g}") -> Table:
    """A frame for the page as a :class:`Table`: HTML that wraps its text to the page column, with a horizontal
    scrollbar right below it where it is still wider (the book's one way to show a table).

    Example: ``table(ch.comparison_table(comp), title="Every defense at its setting")``"""
    return Table(frame, title, float_format)


def stylesheet() -> str:
    """CSS for the page's tables (:class:`ClaimsTable`, :class:`Table`, the ledger's claims tables): fixed
    column widths in the page column, text wrapped; the book serves it with the verdict colours."""
    return "\n".join([
        "/* robustnb.book.pages: claims tables and wide tables that fit the page column */",
        "table.robustnb-claims, table.robustnb-claims-ledger { table-layout: fixed; width: 100%; }",
        "table.robustnb-claims th, table.robustnb-claims td, table.robustnb-claims-ledger th, "
        "table.robustnb-claims-ledger td, table.robustnb-table th, table.robustnb-table td "
        "{ text-align: left; vertical-align: top; white-space: normal; overflow-wrap: break-word; }",
        "table.robustnb-claims-ledger { font-size: 0.85em; }",
        "table.robustnb-claims details > summary { cursor: pointer; }",
        "div.robustnb-table-scroll { overflow-x: auto; max-width: 100%; }",
        "div.robustnb-table-scroll > table.robustnb-table { margin: 0; }", ""])
