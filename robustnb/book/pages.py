"""What a chapter's code cells call to put results into the page: the package's own source
(:func:`show_source`), glued numbers (:func:`glue`), and a chapter's claims table glued for its prose and the
ledger (:func:`record`)."""

from __future__ import annotations

import importlib
import inspect
import json
import textwrap

from IPython.display import Markdown, Pretty

from robustnb import ledger


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
    formatted strings, or numbers). Returns a display frame of the claims (claim with its role unless primary,
    paper, source, measure, ours, verdict, Holm, power) for the page."""
    for name, value in numbers.items():
        glue(name, value)
    if claims is None:
        return None
    claims = with_undeclared_filled(claims)
    for row in claims.itertuples():
        glue(row.claim_id, row.ours)
        glue(f"{row.claim_id}_verdict", row.verdict)
        glue(f"{row.claim_id}_holm", row.holm or ("not tested" if row.role == "primary" else "not counted"))
        glue(f"{row.claim_id}_power", row.power or "not a primary claim")
    # the whole table, for the ledger's summary and forest plots (robustnb.ledger), as JSON text: a notebook's
    # glued outputs may only hold text
    rows = ledger.ledger_rows(claims, declared_claims(claims["chapter"]))
    glue(ledger.GLUE_KEY, Pretty(json.dumps(rows, allow_nan=False)))
    shown = claims.assign(claim=[f"{c} ({r})" if r != "primary" else c for c, r in zip(claims["claim"], claims["role"])])
    return shown[["claim", "paper", "source", "measure", "ours", "verdict", "holm", "power"]].reset_index(drop=True)


NOT_MEASURED = "not measured at this preset"


def declared_claims(chapter_names) -> dict:
    """The ``PAPER_CLAIMS`` of the chapters named (claim id -> PaperClaim)."""
    out = {}
    for chapter in dict.fromkeys(chapter_names):
        out.update(getattr(importlib.import_module(f"robustnb.chapters.{chapter}"), "PAPER_CLAIMS", {}))
    return out


def with_undeclared_filled(claims):
    """Add a row for every claim the chapter declares (``PAPER_CLAIMS`` of each chapter named in the frame)
    that this run did not measure (a grid too small at ``smoke``, say): ours = "not measured at this preset",
    verdict "inconclusive at this size". The ledger and the prose then always find every claim."""
    import pandas as pd

    rows = []
    for chapter in dict.fromkeys(claims["chapter"]) if len(claims) else []:
        declared = getattr(importlib.import_module(f"robustnb.chapters.{chapter}"), "PAPER_CLAIMS", {})
        for cid, pc in declared.items():
            if cid not in set(claims["claim_id"]):
                rows.append({"chapter": chapter, "claim_id": cid, "claim": pc.claim, "paper": pc.paper,
                             "source": pc.source, "measure": pc.measure, "ours": NOT_MEASURED,
                             "value": float("nan"), "low": float("nan"), "high": float("nan"),
                             "verdict": "inconclusive at this size", "n": 0, "unit": pc.unit,
                             "form": pc.form, "p": float("nan"), "holm": "", "role": pc.role,
                             "detectable": float("nan"),
                             "power": "not measured at this preset" if pc.counted else ""})
    if rows and "stand_in" in claims:  # a row not measured is on the same data as the chapter's others
        for row in rows:
            row["stand_in"] = bool(claims.loc[claims["chapter"] == row["chapter"], "stand_in"].fillna(False).any())
    return pd.concat([claims, pd.DataFrame(rows)], ignore_index=True) if rows else claims
