"""The compressed-models chapter's module (robustnb.chapters.compressed_domain_shift): config and summaries."""

import pandas as pd
import pytest

from robustnb.chapters import compressed_domain_shift as ch
from robustnb.config import PRESETS


@pytest.mark.parametrize("preset", PRESETS)
def test_config_for_every_preset(preset):
    cfg = ch.StudyConfig.from_preset(preset)
    assert cfg.base_archs and len(cfg.eps_255) == 2 and len(cfg.sp_budgets) == 2


def _results():
    rows = []
    for model, method, base, size in (("r18", "baseline", "r18", 40.0), ("r18 int8", "int8", "r18", 10.0)):
        for dom, role, acc in (("src", "source", 0.8), ("tgt", "target", 0.6)):
            for attack, strength in (("clean", "none"), ("fgsm", "light"), ("salt_pepper", "light")):
                rows.append({"model": model, "method": method, "base": base, "domain": dom, "role": role,
                             "attack": attack, "strength": strength, "budget": 0.0,
                             "accuracy": acc - (0.1 if attack != "clean" else 0), "crafted_on": "-",
                             "params": 1e6, "size_mb": size, "compression": 40.0 / size, "detail": ""})
    return pd.DataFrame(rows)


def test_summaries_read_the_frame():
    df = _results()
    table = ch.results_table(df)
    assert set(table["model"]) == {"r18", "r18 int8"} and "clean" in table.columns
    s = ch.robustness_summary(df).set_index("model")
    assert s.loc["r18", "source_clean"] == pytest.approx(0.8) and s.loc["r18", "shift_retention"] == pytest.approx(0.75)
