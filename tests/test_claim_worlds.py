"""Every claim of every chapter, tried on constructed worlds before it is trusted (robustnb.stats, "roles and worlds").

Each claim in a chapter's ``PAPER_CLAIMS`` declares ``worlds = (right, wrong)``: the true value of its measured
quantity in a world built to the paper's statement and in one where the paper is wrong. The chapter's
``world_claims(claim_id, truth, replicates=None)`` builds its own claims input (the frame its ``claims`` reads) at
the ``cpu`` preset's shapes (rounds, seeds, images) with that truth, and returns the chapter's claims table: the
claim's own estimate and rule. In the paper's world the claim must read "reproduced", in the wrong one "not
reproduced", and with ``TOO_FEW`` replicates (the chapter's constant) "inconclusive at this size". A claim true by
construction (role ``construction``) declares no worlds; it must say why it is not counted."""

import importlib

import pytest

from robustnb import book, stats

CLAIMED = [p.stem for p in book.chapters()
           if getattr(importlib.import_module(f"robustnb.chapters.{p.stem}"), "PAPER_CLAIMS", None)]
CASES = [(c, cid) for c in CLAIMED for cid in importlib.import_module(f"robustnb.chapters.{c}").PAPER_CLAIMS]


def _row(table, cid):
    rows = table[table["claim_id"] == cid]
    assert len(rows) == 1, f"{cid}: the chapter's claims table has {len(rows)} rows for it"
    return rows.iloc[0]


@pytest.mark.parametrize("chapter, cid", CASES, ids=[cid for _, cid in CASES])
def test_the_claim_reads_its_constructed_worlds(chapter, cid):
    mod = importlib.import_module(f"robustnb.chapters.{chapter}")
    pc = mod.PAPER_CLAIMS[cid]
    if pc.role == "construction":
        assert pc.why, f"{cid} is true by construction: it must say why (PaperClaim.why)"
        assert not pc.counted
        return
    assert pc.worlds is not None, f"{cid} declares no worlds (PaperClaim.worlds = (paper right, paper wrong))"
    right, wrong = pc.worlds
    got = _row(mod.world_claims(cid, right), cid)
    assert got.verdict == "reproduced", f"{cid} in the paper's world ({right}): {got.verdict}, {got.ours}"
    got = _row(mod.world_claims(cid, wrong), cid)
    assert got.verdict == "not reproduced", f"{cid} in a world where the paper is wrong ({wrong}): {got.verdict}, {got.ours}"
    got = _row(mod.world_claims(cid, right, replicates=mod.TOO_FEW), cid)
    assert got.verdict == stats.INCONCLUSIVE, f"{cid} with {mod.TOO_FEW} replicates: {got.verdict}, {got.ours}"


@pytest.mark.parametrize("chapter", CLAIMED)
def test_each_chapter_names_few_primary_claims(chapter):
    """The papers' statements as made, few per chapter; everything else is shown and not counted."""
    claims = importlib.import_module(f"robustnb.chapters.{chapter}").PAPER_CLAIMS
    primary = [cid for cid, pc in claims.items() if pc.role == "primary"]
    assert len(primary) <= 6, f"{chapter}: {len(primary)} primary claims; keep the paper's statements, few"


def test_every_paper_has_primary_claims():
    roles = {c: {pc.role for pc in importlib.import_module(f"robustnb.chapters.{c}").PAPER_CLAIMS.values()}
             for c in CLAIMED}
    parts = {caption: files for caption, files in book.toc_parts()}
    for caption, files in parts.items():
        mine = [f.split("/")[-1] for f in files if f.split("/")[-1] in roles]
        if mine:
            assert any("primary" in roles[c] for c in mine), f"{caption}: no primary claim in {mine}"
