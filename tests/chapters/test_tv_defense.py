"""The TV-defense chapter's module (robustnb.chapters.tv_defense): config, tables and the verdict."""

import pandas as pd
import pytest

from robustnb.chapters import tv_defense as ch
from robustnb.config import PRESETS
from robustnb.defenses import DEFENSES


@pytest.mark.parametrize("preset", PRESETS)
def test_config_for_every_preset(preset):
    cfg = ch.DefenseConfig.from_preset(preset)
    assert cfg.n_images > 0 and cfg.eps_255 and 0.0 in cfg.lambda_tv_grid


def _table():
    rows = []
    for d in DEFENSES:
        rows.append({"entropy_model": "hyperprior", "defense": d, "input": "clean", "eps_255": 0.0, "bytes": 100.0,
                     "overhead": 0.0 if d == "none" else -0.1, "accuracy": 0.8 if d == "none" else 0.75})
        rows.append({"entropy_model": "hyperprior", "defense": d, "input": "attacked", "eps_255": 2.0, "bytes": 130.0,
                     "overhead": 0.3 if d == "none" else 0.05, "accuracy": 0.7})
        rows.append({"entropy_model": "hyperprior", "defense": d, "input": "adaptive", "eps_255": 2.0, "bytes": 140.0,
                     "overhead": 0.3 if d == "none" else (0.02 if d == "jpeg" else 0.1), "accuracy": 0.7})
    return pd.DataFrame(rows)


def test_tables_and_verdict_read_the_frame():
    t = _table()
    wide = ch.overhead_table(t, 2.0)
    assert len(wide) == len(DEFENSES) and "attacked: overhead %" in wide.columns
    comp = ch.paper_comparison(t, 2.0)
    assert comp["ours"].iloc[0] == "+30.0%"
    (sentence,) = ch.verdict(t)
    assert "+30.0%" in sentence and "jpeg (+2.0%)" in sentence
