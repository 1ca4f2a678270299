"""book/runtimes.json: the one file the runtime boxes, the intro's table and the progress line read."""

import json
import re

import pandas as pd
import pytest

from robustnb import bench, book
from robustnb.book import runtimes

NAMES = ["alpha", "beta", "gamma"]


def write(tmp_path, data):
    path = tmp_path / "runtimes.json"
    path.write_text(json.dumps(data))
    return path


def test_the_file_names_real_chapters_and_known_fields():
    data = runtimes.load()
    names = {p.stem for p in book.chapters()}
    assert {"smoke", "cpu"} <= set(data)
    for fields in data.values():
        assert all(set(chapters) <= names for field, chapters in fields.items() if not field.startswith("rebuild"))
        assert set(fields.get("rebuild_seconds", {})) <= set(runtimes.REBUILDS)
        assert bool(fields.get("rebuild_seconds")) == bool(fields.get("rebuild_how"))  # a time says how it was taken


def test_rebuild_times_render_by_what_changed(tmp_path):
    path = write(tmp_path, {"cpu": {"seconds": {"alpha": 45.0}, "rebuild_seconds": {"docstring": 11.7, "code": 170.3},
                                    "rebuild_how": "make book, alone"}})
    subs = runtimes.values(path, NAMES)
    assert subs["rb_cpu_docstring"] == "12 s" and subs["rb_cpu_code"] == "2.8 min"
    assert subs["rbhow_cpu"] == "make book, alone" and "rb_cpu_prose" not in subs
    with pytest.raises(ValueError, match="rebuild_seconds"):
        runtimes.values(write(tmp_path, {"cpu": {"rebuild_seconds": {"typo": 1.0}}}), NAMES)


def test_values_render_measured_estimated_and_missing_rows(tmp_path):
    path = write(tmp_path, {"cpu": {"seconds": {"alpha": 45.0, "beta": 1336.8}, "peak_mb": {"alpha": 1638},
                                    "estimated_seconds": {"gamma": 9000.0}}})
    subs = runtimes.values(path, NAMES)
    assert subs["rt_cpu_alpha"] == "45 s" and subs["rt_cpu_beta"] == "22 min"
    assert subs["rt_cpu_gamma"].startswith("about 2.5 h") and "estimate" in subs["rt_cpu_gamma"]
    assert subs["mem_cpu_alpha"] == "1.6 GB" and subs["mem_cpu_beta"] == runtimes.NOT_MEASURED
    assert subs["rt_cpu_total"].startswith("about 2.9 h") and "1 of them estimated" in subs["rt_cpu_total"]
    only_measured = runtimes.values(path, ["alpha", "beta"])
    assert only_measured["rt_cpu_total"] == "23 min"
    missing = runtimes.values(path, ["alpha", "delta"])
    assert missing["rt_cpu_delta"] == runtimes.NOT_MEASURED and "1 chapter not measured" in missing["rt_cpu_total"]


@pytest.mark.parametrize("seconds, text", [(5, "5 s"), (89, "89 s"), (90, "1.5 min"), (599, "10.0 min"),
                                           (600, "10 min"), (5399, "90 min"), (5400, "1.5 h")])
def test_durations(seconds, text):
    assert runtimes.duration(seconds) == text


def test_a_measurement_replaces_the_estimate_and_keeps_the_rest(tmp_path):
    path = write(tmp_path, {"cpu": {"seconds": {"alpha": 10.0}, "estimated_seconds": {"beta": 100.0}},
                            "smoke": {"seconds": {"beta": 3.0}}})
    df = pd.DataFrame([{"chapter": "beta", "wall_s": 77.4, "peak_mem_mb": 2048.2, "status": "ok"},
                       {"chapter": "gamma", "wall_s": 1.0, "peak_mem_mb": 1.0, "status": "Error: boom"}])
    bench.save_runtimes(df, "cpu", path)
    data = json.loads(path.read_text())
    assert data["cpu"] == {"seconds": {"alpha": 10.0, "beta": 77.4}, "peak_mb": {"beta": 2048}}
    assert data["smoke"] == {"seconds": {"beta": 3.0}}
    assert runtimes.expected("cpu", path) == {"alpha": 10.0, "beta": 77.4}


def test_a_malformed_file_names_the_bad_field(tmp_path):
    with pytest.raises(ValueError, match="'wall'.*allowed fields"):
        runtimes.load(write(tmp_path, {"cpu": {"wall": {}}}))
    assert runtimes.load(tmp_path / "absent.json") == {}


def test_every_runtime_span_of_the_book_is_known_and_up_to_date():
    """The chapters' boxes and the intro's table carry the file's numbers as marked spans that Jupyter, Colab and the
    book all show: every span names a value of the file, says what the file says now (else: python -m
    robustnb.book sync), and no MyST substitution (which Jupyter and Colab print raw) is left."""
    known = runtimes.values()
    used = {}
    for page in [*book.chapters(), book.ROOT / "book" / "intro.md"]:
        text = page.read_text() if page.suffix == ".md" else "".join(
            "".join(c["source"]) for c in json.loads(page.read_text())["cells"] if c["cell_type"] == "markdown")
        assert not re.search(r"\{\{\s*(rt|mem|how)_", text), f"{page.name}: a {{{{ }}}} runtime substitution is left"
        used.update({m["name"]: (page.name, m["text"]) for m in runtimes.SPAN.finditer(text)})
    assert {"rt_cpu_total", "rt_smoke_total"} <= set(used)
    assert set(used) <= set(known), sorted(set(used) - set(known))
    stale = {name: (page, text, known[name]) for name, (page, text) in used.items() if text != known[name]}
    assert not stale, f"out of date (python -m robustnb.book sync): {stale}"


def test_fill_rewrites_spans_and_names_an_unknown_value():
    text = f"took {runtimes.span('rt_cpu_alpha', 'old')} and {runtimes.span('how_cpu_alpha', 'x')}."
    assert runtimes.fill(text, {"rt_cpu_alpha": "5 s", "how_cpu_alpha": "alone"}) == \
        f"took {runtimes.span('rt_cpu_alpha', '5 s')} and {runtimes.span('how_cpu_alpha', 'alone')}."
    with pytest.raises(KeyError, match="rt_cpu_omega.*rt_cpu_alpha"):
        runtimes.fill(runtimes.span("rt_cpu_omega"), {"rt_cpu_alpha": "5 s"})


def test_a_measurement_records_how_it_was_taken(tmp_path):
    path = write(tmp_path, {"cpu": {"seconds": {"alpha": 10.0}, "how": {"alpha": "by hand"}}})
    runtimes.save([("beta", 20.0, 100)], "cpu", path, how="make book, alone")
    runtimes.save([("alpha", 11.0, 100)], "cpu", path)
    data = json.loads(path.read_text())["cpu"]
    assert data["how"] == {"beta": "make book, alone"}  # alpha re-measured without a text: its old text is gone
    assert runtimes.values(path, ["alpha", "beta"])["how_cpu_beta"] == "make book, alone"


def test_the_gpu_entry_renders_beside_stopped_and_not_run_rows(tmp_path):
    path = write(tmp_path, {"gpu": {"seconds": {"alpha": 38.1, "beta": 353.3}, "beside": {"beta": "gamma"},
                                    "stopped_seconds": {"gamma": 369.3}, "notes": {"delta": "no Ray there"}}})
    subs = runtimes.values(path, [*NAMES, "delta"])
    assert subs["rt_gpu_alpha"] == "38 s"
    assert subs["rt_gpu_beta"] == "5.9 min (beside the gamma chapter, each on half of the cores)"
    assert subs["rt_gpu_gamma"] == "not finished: stopped after 6.2 min"
    assert subs["rt_gpu_delta"] == f"{runtimes.NOT_MEASURED}: no Ray there"
    # a stopped chapter is not counted in the total
    assert subs["rt_gpu_total"] == "6.5 min for the 2 chapters measured (2 chapters not measured)"


def _configured_timeout() -> float:
    import yaml

    return float(yaml.safe_load((book.ROOT / "_config.yml").read_text())["execute"]["timeout"])


@pytest.mark.parametrize("preset", sorted(runtimes.load()))
def test_no_recorded_cell_comes_near_the_execution_timeout(preset):
    """MyST-NB applies `execute: timeout` to every cell, in cache mode too: a cell longer than it fails the book
    build. Every chapter's longest recorded cell (or, where none was recorded, its whole time) stays at least
    TIMEOUT_MARGIN times below it."""
    timeout = _configured_timeout()
    bounds = runtimes.cell_bounds(preset)
    assert bounds, f"no times recorded at {preset}"
    too_long = {c: (s, what) for c, (s, what) in bounds.items() if s * runtimes.TIMEOUT_MARGIN > timeout}
    assert not too_long, (f"_config.yml's per-cell timeout {timeout:.0f} s is less than {runtimes.TIMEOUT_MARGIN}x "
                          f"these recorded times at {preset}: {too_long}")


def test_cell_bounds_prefer_the_longest_cell(tmp_path):
    path = write(tmp_path, {"cpu": {"seconds": {"alpha": 500.0, "beta": 90.0}, "longest_cell_seconds": {"alpha": 320.0},
                                    "estimated_seconds": {"gamma": 9000.0}}})
    assert runtimes.cell_bounds("cpu", path) == {"alpha": (320.0, "longest cell"), "beta": (90.0, "whole chapter"),
                                                 "gamma": (9000.0, "whole chapter")}
    assert runtimes.cell_bounds("full", path) == {}
    runtimes.save([("beta", 100.0, 900, 60.5)], "cpu", path)
    assert runtimes.cell_bounds("cpu", path)["beta"] == (60.5, "longest cell")


def test_bench_reads_the_longest_cell_from_papermill(tmp_path):
    nb = {"cells": [{"metadata": {"papermill": {"duration": 1.5}}}, {"metadata": {}},
                    {"metadata": {"papermill": {"duration": 12.25}}}]}
    path = tmp_path / "out.ipynb"
    path.write_text(json.dumps(nb))
    assert bench.longest_cell(str(path)) == 12.25
    assert bench.longest_cell(str(tmp_path / "missing.ipynb")) != bench.longest_cell(str(tmp_path / "missing.ipynb"))
