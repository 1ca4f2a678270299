"""The claims ledger at a glance: per paper, how many of its *primary* claims (the paper's statements as made)
each verdict got, unadjusted and after Holm's correction over the paper's primary claims across its chapters, and,
listed apart and never counted, the rows that are not evidence about the paper (exploratory readings, the book's
additions, set-up checks, rows true by construction, rows on stand-in data); per chapter, a forest plot of its
measured claims (ours with the 95% interval, coloured by verdict, the claim in the hover; the figure or bound it
is judged against, labelled as the paper's or as the book's own), the claims not measured listed under it.

Every chapter's :func:`robustnb.book.record` glues its whole paper-vs-ours table as :data:`GLUE_KEY` (the rows of
:func:`ledger_rows` as JSON text). The book's Sphinx extension (:mod:`robustnb.book`) reads those tables back from the
build (:func:`read_glued`) and places :func:`summary` (a table per paper, in the introduction and atop the ledger)
and :func:`forest_figure` (per chapter, in the ledger); ``python -m robustnb.book summary`` prints the summary
after ``make book``. So the counts and the plots come from the same run as the chapters' tables, never typed.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from pathlib import Path

import pandas as pd

from robustnb import plots
from robustnb.stats import VERDICTS, holm_reading

GLUE_KEY = "claims_ledger"
#: a verdict's colour, in the forest plots and in the ledger's verdict cells (Okabe-Ito, colour-blind safe)
VERDICT_COLOURS = dict(zip(VERDICTS, ("#009E73", "#56B4E9", "#D55E00", "#999999")))
#: a verdict's column in the summary
SHORT = dict(zip(VERDICTS, ("reproduced", "in direction", "not reproduced", "inconclusive")))
ROW_FIELDS = ("claim_id", "claim", "paper", "source", "ours", "value", "low", "high", "verdict", "unit", "scale",
              "paper_value", "form", "role", "p", "power", "why", "stand_in")
#: the summary's columns for what is not counted, by role (rows on stand-in data are counted apart whatever their role)
APART = {"exploratory": "exploratory", "addition": "book's additions", "setup": "set-up checks",
         "construction": "by construction"}
STAND_IN = "on stand-in data"


def css_class(verdict: str) -> str:
    """``"reproduced in direction"`` -> ``"robustnb-verdict robustnb-verdict-reproduced-in-direction"``."""
    return f"robustnb-verdict robustnb-verdict-{verdict.replace(' ', '-')}"


def stylesheet() -> str:
    """CSS for the verdict cells, in :data:`VERDICT_COLOURS` (``!important``: the theme's tables paint every cell
    with Bootstrap's striping)."""
    rules = [f"td.robustnb-verdict-{v.replace(' ', '-')}, th.robustnb-verdict-{v.replace(' ', '-')} "
             f"{{ background-color: {c}33 !important; box-shadow: inset 4px 0 0 {c} !important; }}"
             for v, c in VERDICT_COLOURS.items()]
    return "\n".join(["/* robustnb.ledger: verdict cells, coloured as in the claims' forest plots */", *rules,
                      ".robustnb-verdict { font-weight: 600; }",
                      "table.robustnb-summary { font-size: 0.8em; }",
                      "table.robustnb-summary th, table.robustnb-summary td { padding: 0.3em 0.4em; }",
                      "table.robustnb-summary td { text-align: right; }",
                      "table.robustnb-apart { font-size: 0.85em; }",
                      "table.robustnb-apart td, table.robustnb-apart th { text-align: left; }",
                      "table.robustnb-summary td:first-child, table.robustnb-summary th:first-child "
                      "{ text-align: left; }", ""])


def _number(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def ledger_rows(claims, declared: dict) -> list[dict]:
    """A chapter's claims table (a frame with :data:`robustnb.stats.CLAIM_COLUMNS`, and optionally a ``stand_in``
    column: the row was measured on a stand-in for the paper's data) as JSON-ready rows of :data:`ROW_FIELDS`,
    with how each claim displays its values (``scale``, ``unit``), the paper's figure or bound (``paper_value``),
    its role and, for a construction or set-up row, why it is not evidence, from ``declared`` (the chapter's
    ``PAPER_CLAIMS``)."""
    rows = []
    stand_in = (claims["stand_in"].fillna(False).astype(bool) if "stand_in" in claims  # NaN: a row not measured
                else [False] * len(claims))
    for r, alt in zip(claims.itertuples(), stand_in):
        pc = declared.get(r.claim_id)
        rows.append({
            "claim_id": r.claim_id, "claim": r.claim, "paper": r.paper, "source": r.source, "ours": r.ours,
            "value": _number(r.value), "low": _number(r.low), "high": _number(r.high), "verdict": r.verdict,
            "unit": r.unit, "scale": pc.scale if pc else 100.0,
            "paper_value": _number(pc.paper_value) if pc else None, "form": r.form,
            "role": pc.role if pc else "exploratory", "p": _number(getattr(r, "p", None)),
            "power": getattr(r, "power", "") or "", "why": pc.why if pc else "", "stand_in": bool(alt)})
    return rows


def read_glued(glue_file: Path) -> pd.DataFrame | None:
    """The ledger rows a chapter glued (:data:`GLUE_KEY`) in a build, from myst-nb's ``<chapter>.glue.json``;
    None when the chapter glued none (or was not built)."""
    try:
        glued = json.loads(Path(glue_file).read_text())
    except (OSError, ValueError):
        return None
    out = glued.get(GLUE_KEY)
    if out is None:
        return None
    text = next((v for k, v in out["data"].items() if k.endswith("text/plain")), None)
    return None if text is None else pd.DataFrame(json.loads("".join(text)), columns=list(ROW_FIELDS))


def summary(papers: dict[str, list[pd.DataFrame]]) -> pd.DataFrame:
    """Per paper (``papers``: name -> its chapters' ledger frames), in the given order, a ``total`` row last:
    ``primary`` (its primary claims measured on the paper's kind of data) and how many of them got each verdict
    (:data:`SHORT`'s columns), ``hold after Holm`` (Holm's correction over the paper's primary claims across all
    its chapters), then the rows listed apart and never counted (:data:`APART`, :data:`STAND_IN`)."""
    rows = []
    for name, frames in papers.items():
        f = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(ROW_FIELDS))
        role = f["role"].fillna("exploratory") if "role" in f else pd.Series(["exploratory"] * len(f))
        alt = f["stand_in"].fillna(False).astype(bool) if "stand_in" in f else pd.Series([False] * len(f))
        counted = (role == "primary") & ~alt
        verdicts = f.loc[counted, "verdict"]
        p = pd.to_numeric(f["p"], errors="coerce") if "p" in f else pd.Series([float("nan")] * len(f))
        held = sum(h == "holds" for h in holm_reading(p.to_numpy(dtype=float), counted.to_numpy()))
        rows.append({"paper": name, "primary": int(counted.sum()),
                     **{SHORT[v]: int((verdicts == v).sum()) for v in VERDICTS}, "hold after Holm": held,
                     **{col: int(((role == r) & ~alt).sum()) for r, col in APART.items()},
                     STAND_IN: int(alt.sum())})
    cols = ["paper", "primary", *SHORT.values(), "hold after Holm", *APART.values(), STAND_IN]
    table = pd.DataFrame(rows, columns=cols)
    total = {"paper": "total", **table.drop(columns="paper").sum().astype(int).to_dict()}
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


NOT_COUNTED = "not counted"


def summary_display(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`summary` for the page and the terminal: the primary claims' columns, then one ``not counted`` column
    (the rows listed apart, detailed by :func:`not_counted`)."""
    apart = [*APART.values(), STAND_IN]
    return table.drop(columns=apart).assign(**{NOT_COUNTED: table[apart].sum(axis=1).astype(int)})


def not_counted(papers: dict[str, list[pd.DataFrame]]) -> pd.DataFrame:
    """The rows the summary lists apart, one per row: paper, claim, why it is not counted (its role, the reason
    a construction or set-up row gives, or the stand-in data), verdict."""
    out = []
    for name, frames in papers.items():
        for f in frames:
            for r in f.itertuples():
                role = getattr(r, "role", "exploratory") or "exploratory"
                alt = bool(getattr(r, "stand_in", False))
                if role == "primary" and not alt:
                    continue
                why = STAND_IN if alt else APART.get(role, role)
                if getattr(r, "why", ""):
                    why += f": {r.why}"
                out.append({"paper": name, "claim": r.claim, "not counted because": why, "verdict": r.verdict})
    return pd.DataFrame(out, columns=["paper", "claim", "not counted because", "verdict"])


def summary_text(table: pd.DataFrame) -> str:
    """:func:`summary` as a plain-text table for the terminal (papers left-aligned)."""
    width = max(len("paper"), *(len(p) for p in table["paper"]))
    cols = list(table.columns[1:])
    lines = [f"{'paper':<{width}}  " + "  ".join(cols)]
    for row in table.itertuples(index=False):
        lines.append(f"{row[0]:<{width}}  " + "  ".join(f"{v:>{len(c)}}" for v, c in zip(row[1:], cols)))
    return "\n".join(lines)


def _label(text: str, width: int = 58) -> str:
    lines = textwrap.wrap(text, width)
    return "<br>".join(lines[:2]) + ("…" if len(lines) > 2 else "")


#: how a claim says that its figure or bound is the book's, not the paper's (``PaperClaim.paper``, e.g. "no figure
#: in the summary: the 5-point bound is the book's", "at least +10%, the book's bound", "the book's derivation")
BOOKS_FIGURE = re.compile(r"\bthe book's (?:bound|figure|derivation)\b|\b(?:bound|figure) is the book's\b", re.I)
#: the legend's name of a reference marker, by whose figure it is and whether it is a bound (``at_most``/``at_least``)
REFERENCE = {("paper", False): "the paper's figure", ("paper", True): "the paper's bound",
             ("book", False): "the book's figure", ("book", True): "the book's bound"}
#: its symbol: the paper's an open diamond, the book's an open square
REFERENCE_SYMBOLS = {name: "diamond-open" if owner == "paper" else "square-open"
                     for (owner, _), name in REFERENCE.items()}
#: the forest plots' list of the claims they do not draw
NOT_DRAWN = "not measured at this preset (no 95% interval), not drawn"


def figure_owner(paper: str, source: str, role: str) -> str:
    """``"book"`` when a claim's figure or bound is the book's own: the claim is the book's addition, its source is
    "this book", or its quoted ``paper`` text says the figure is the book's (:data:`BOOKS_FIGURE`); else
    ``"paper"``."""
    if role == "addition" or str(source or "").strip().lower().startswith("this book"):
        return "book"
    return "book" if BOOKS_FIGURE.search(str(paper or "")) else "paper"


def reference_name(paper: str, source: str, role: str, form: str) -> str:
    """The forest plots' name for a claim's figure (:data:`REFERENCE`): "the paper's figure", "the book's bound"..."""
    return REFERENCE[figure_owner(paper, source, role), form in ("at_most", "at_least")]


def forest_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """A chapter's ledger rows in the display units of each claim (``value * scale``), one unique label per
    claim, whose figure the reference is (``reference``: :func:`reference_name`, None without one), the hover
    text (the claim, the paper's words, ours, the figure, the verdict) and the panel (its unit)."""
    f = rows.copy()
    for c in ("value", "low", "high", "paper_value"):
        f[c] = pd.to_numeric(f[c], errors="coerce") * f["scale"].astype(float)
    f["label"] = [_label(c) for c in f["claim"]]
    dup = f["label"].duplicated(keep=False)
    f.loc[dup, "label"] = [f"{lab} ({cid})" for lab, cid in zip(f.loc[dup, "label"], f.loc[dup, "claim_id"])]
    f["panel"] = [f"ours vs the paper ({u.strip()})" if str(u).strip() else "ours vs the paper"
                  for u in f["unit"]]
    role = f["role"].fillna("exploratory") if "role" in f else pd.Series(["exploratory"] * len(f), index=f.index)
    f["reference"] = [reference_name(r.paper, r.source, ro, r.form) if pd.notna(r.paper_value) else None
                      for r, ro in zip(f.itertuples(), role)]
    f["hover"] = [f"<b>{_label(r.claim, 70)}</b><br>paper: {_label(r.paper, 70)} ({r.source})<br>ours: {r.ours}"
                  + (f"<br>{r.reference}: {r.paper_value:.3g}{r.unit}" if r.reference else "")
                  + f"<br>verdict: {r.verdict}" for r in f.itertuples()]
    return f


def measured(rows: pd.DataFrame) -> pd.Series:
    """Which ledger rows a forest plot draws: a value with both ends of its 95% interval."""
    return rows[["value", "low", "high"]].apply(pd.to_numeric, errors="coerce").notna().all(axis=1)


def forest_figure(rows: pd.DataFrame, title: str | None = None):
    """A chapter's claims as a forest plot (:func:`robustnb.plots.forest`): each measured claim (a value with its 95%
    interval), coloured by verdict, the claim's figure or bound as an open symbol named by whose it is
    (the paper's, or the book's own: :func:`reference_name`), one panel per unit; the claims not measured are not
    drawn but listed under the plot (:data:`NOT_DRAWN`)."""
    f = forest_frame(rows)
    return plots.forest(f, y="label", x="value", low="low", high="high", color="verdict",
                        color_map=VERDICT_COLOURS, marker="paper_value", marker_group="reference",
                        marker_symbols=REFERENCE_SYMBOLS, hover="hover",
                        facet="panel", ids="claim_id", missing_title=NOT_DRAWN, title=title)
