"""The claims ledger page (``book/claims.md``) and the terminal summary ``make book`` ends with: every chapter's
claims, pasted from the chapters' own executed results (cross-page glue)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from robustnb import ledger
from robustnb.book.pages import for_readers
from robustnb.book.toc import ROOT, chapters, toc_files, toc_parts

LEDGER = "book/claims.md"


def ledger_markdown(root: Path = ROOT) -> str:
    """The claims ledger page: every claim of every chapter (its ``PAPER_CLAIMS``), the paper's figure, ours
    with its interval and the verdict, both pasted from the chapter's own executed results (cross-page glue),
    so the ledger cannot disagree with the chapters. ``python -m robustnb.book ledger`` rewrites the page."""
    lines = ["# Claims ledger", "",
             "Every claim this book tests, with the paper's figure, ours with its 95% interval, and the verdict of",
             "the rule for the claim's form in `robustnb.stats.verdict` (an increase or decrease, of the paper's size",
             "or not; a difference between two of our measurements; an upper or lower bound; no change within a",
             "margin). Each rule was tried on constructed worlds before it was trusted: in a world built to the",
             "paper's statement it reads \"reproduced\", in one where the paper is wrong \"not reproduced\", with",
             "too few replicates \"inconclusive\" (`tests/test_claim_worlds.py`).", "",
             "Only the **primary** claims are counted: the papers' statements as made, few per paper. The other rows",
             "are shown and never counted: *exploratory* readings (finer cuts of a primary claim), the book's own",
             "*additions*, *set-up* checks (the set-up doing what it was built to do), rows true *by construction*",
             "(with why), and rows measured on *stand-in* data. *Holm* reads a paper's primary claims together,",
             "across its chapters: a claim \"holds\" when its one-sided test still rejects \"the claim is false\"",
             "after Holm's adjustment (family-wise 2.5%); a chapter's own table applies it over that chapter's",
             "primary claims. Beside every primary claim's result, its *power*: the smallest effect this run",
             "detects with 80% power, from its own spread, against the paper's effect (or 10 points where it states",
             "none).", "",
             "The papers' figures are quoted from a summary of each paper (title, abstract, key results), with where",
             "the paper says it. Where that summary gives no figure, the claim is judged for its direction only.", "",
             "The measured columns are pasted from each chapter's own run in this build (same preset, same seed), so",
             "they always agree with the chapters' tables. Data: the offline CIFAR-10 archive is a JPEG re-encoding",
             "at quality 75 (see the introduction); chapters say where they use a stand-in for the paper's data.", "",
             "## At a glance", "",
             "Each paper's primary claims: how many this build reproduced, reproduced in direction only, did not",
             "reproduce, or could not decide, and how many hold after Holm's correction over the paper's primary",
             "claims; then the rows counted apart. Each chapter's section opens with a forest plot of its claims:",
             "ours with its 95% interval (a circle coloured by the verdict), the paper's figure or bound where it",
             "gives one (an open diamond) and the book's own bound where it sets one (an open square), on the claim's",
             "own units; hover for the claim. Claims not measured at this preset are listed under the plot.", "",
             "```{claims-summary}", "```", "",
             "The rows not counted, and why:", "",
             "```{claims-apart}", "```", ""]
    short = paper_names(root)
    for nb in chapters(root):
        mod = importlib.import_module(f"robustnb.chapters.{nb.stem}")
        claims = getattr(mod, "PAPER_CLAIMS", {})
        if not claims:
            continue
        title = next(iter(json.loads(nb.read_text())["cells"]))["source"]
        title = "".join(title).splitlines()[0].lstrip("# ").strip()
        rel = nb.name
        paper = short.get(f"book/{nb.stem}", "")
        lines += [f"## [{title}]({rel})", "", f"```{{claims-forest}} {rel}", "```", "",
                  f"```{{table}}", f":class: {LEDGER_TABLE_CLASS}", f":widths: {' '.join(map(str, LEDGER_WIDTHS))}", "",
                  "| claim | the paper's figure | ours (95% interval) | verdict | Holm (chapter) |",
                  "|---|---|---|---|---|"]
        for cid, pc in claims.items():
            role = ROLE_MARKS[pc.role].format(why=_cell(pc.why))
            claim = _cell(pc.claim)
            if role.strip(" *()").split(":")[0] in claim:  # the claim already says it ("... (set-up check)")
                role = " **(primary)**" if pc.role == "primary" else ""
            where = _cell(for_readers(pc.source))
            figure = f"{_cell(for_readers(pc.paper))} ({where if not paper or paper in where else f'{paper}, {where}'})"
            power = f"; power: {{glue:text}}`{rel}::{cid}_power:s`" if pc.role == "primary" else ""
            lines.append(f"| {claim}{role} | {figure} | {{glue:text}}`{rel}::{cid}:s`{power} | "
                         f"{{glue:text}}`{rel}::{cid}_verdict:s` | {{glue:text}}`{rel}::{cid}_holm:s` |")
        lines += ["```", ""]
    return "\n".join(lines)


#: the ledger's claims tables: their class (fixed layout, wrapped text: :func:`robustnb.book.pages.stylesheet`)
#: and column widths (% of the page column: claim, the paper's figure, ours, verdict, Holm)
LEDGER_TABLE_CLASS = "robustnb-claims-ledger"
LEDGER_WIDTHS = (30, 28, 16, 15, 11)
#: how a claim's role is marked in the ledger
ROLE_MARKS = {"primary": " **(primary)**", "addition": " *(book)*", "setup": " *(set-up check)*",
              "construction": " *(by construction: {why})*", "exploratory": " *(exploratory)*"}


def _cell(text: str) -> str:
    """Text for a cell of a Markdown table (a ``|`` would end the cell)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def paper_names(root: Path = ROOT) -> dict:
    """Chapter file (``book/tv_defense``) -> the short name of its paper, from its part's caption in ``_toc.yml``
    (the part "Split computing under attack (Zhang et al.)" -> "Zhang et al."; the whole caption where it has
    no parenthesis)."""
    out = {}
    for caption, files in toc_parts(root):
        name = caption[caption.rfind("(") + 1:].rstrip(")").strip() if caption.rstrip().endswith(")") else caption
        out.update(dict.fromkeys(files, name))
    return out


def summary_report(build_dir: Path, root: Path = ROOT) -> str:
    """The claims summary of a built book (``build_dir``: the folder holding ``html`` and ``jupyter_execute``)
    as text for the terminal: ``make book`` ends with it."""
    glued = glued_ledgers(Path(build_dir) / "jupyter_execute", root)
    if not glued:
        return f"No claims found in {build_dir}/jupyter_execute: build the book first (make book)."
    table = papers_summary(glued, root)
    return f"Claims ledger ({len(glued)} chapters; details in {build_dir}/html/book/claims.html):\n" + \
        ledger.summary_text(table)


def write_ledger(root: Path = ROOT) -> Path:
    path = root / LEDGER
    path.write_text(ledger_markdown(root))
    return path


def glued_ledgers(folder: Path, root: Path = ROOT) -> dict:
    """Every chapter's glued ledger rows in a build (docname -> frame), from myst-nb's glue stores in ``folder``
    (its output folder: ``_build/jupyter_execute``)."""
    out = {}
    for docname in toc_files(root):
        rows = ledger.read_glued(Path(folder) / f"{docname}.glue.json")
        if rows is not None:
            out[docname] = rows
    return out


def _papers(glued: dict, root: Path = ROOT) -> dict:
    """The toc's parts that hold claims (one per paper) -> their chapters' glued ledger frames."""
    papers = {}
    for caption, files in toc_parts(root):
        frames = [glued[f] for f in files if f in glued]
        if frames:
            papers[caption] = frames
    return papers


def papers_summary(glued: dict, root: Path = ROOT):
    """:func:`robustnb.ledger.summary_display` over the toc's parts that hold claims (one per paper)."""
    return ledger.summary_display(ledger.summary(_papers(glued, root)))


def papers_apart(glued: dict, root: Path = ROOT):
    """:func:`robustnb.ledger.not_counted` over the toc's parts that hold claims."""
    return ledger.not_counted(_papers(glued, root))
