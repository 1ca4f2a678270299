"""Hardening, third pass: settings are never dropped, every attack parameter is checked, one rule for
"one or several", execution settings and Ray waits with deadlines, commands that fail before the work and never
overwrite what the user owns. Each test here failed on the code before the issue (the install range is checked in
tests/test_install.py)."""

from __future__ import annotations

import json
import math
import re
import string

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from robustnb import cli, corruptions, defenses, jobs, mechanisms, registry
from robustnb.attacks import (LogitEnsemble, SaltAndPepper, accuracy_at_budgets, make_transfer_attack,
                              robustness_curve)
from robustnb.book import __main__ as book_main
from robustnb.book import ROOT, cells, runtimes, scaffold
from robustnb.config import ConfigError
from robustnb.ensembles import Ensemble
from robustnb.split import build_split_model, zoo

HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAN = float("nan")


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)).eval()


_SPLIT = []


def _split():
    if not _SPLIT:
        torch.manual_seed(0)
        m = build_split_model("vgg", "hyperprior").eval()
        m.update(force=True)
        _SPLIT.append(m)
    return _SPLIT[0]


# ------------------------------------------------------------------------------ 1. makers refuse unknown settings
#: every registry whose entries are built by name (mechanisms.make's kinds, and the split model's parts)
REGISTRIES = {**{kind: reg for kind, reg in mechanisms.KINDS.items()},
              "split architecture": registry.SPLIT_ARCHITECTURES, "entropy model": registry.ENTROPY_MODELS}
MAKERS = [(kind, name) for kind, reg in REGISTRIES.items() for name in reg]


def test_every_maker_says_which_settings_it_takes():
    missing = [(kind, name) for kind, name in MAKERS if REGISTRIES[kind].settings(name) is None]
    assert not missing, f"makers with **kwargs and no declared settings: {missing}"


@HYPOTHESIS
@given(st.sampled_from(MAKERS), st.text(string.ascii_lowercase + "_", min_size=1, max_size=12))
def test_every_maker_refuses_an_unknown_setting_naming_it_and_the_allowed_ones(maker, setting):
    """Nothing is built (no model given): the setting is refused first, whatever the maker."""
    kind, name = maker
    allowed = REGISTRIES[kind].settings(name)
    if setting in allowed:
        return
    with pytest.raises(ConfigError) as err:
        REGISTRIES[kind].make(name, **{setting: 1})
    message = str(err.value)
    assert repr(setting) in message and f"{kind} {name!r}" in message
    assert all(repr(a) in message for a in allowed), message


def test_settings_the_defenses_used_to_drop_are_refused_or_used():
    with pytest.raises(ConfigError, match=r"'qualty' \(did you mean 'quality'\?\) for defense 'jpeg'"):
        mechanisms.make("defense", "jpeg", qualty=50)
    with pytest.raises(ConfigError, match="for defense 'none': allowed are 'bit_map_fn', 'settings'"):
        defenses.make_defense("none", weight=0.1)
    assert defenses.make_defense("global_tv", n_iter=3).n_iter == 3  # was read from the settings alone
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        mechanisms.make("attack", "pgd", _tiny(), eps=4 / 255, stpes=2)


# ------------------------------------------------------------------------------ 2. every attack parameter checked
INTEGER = ("steps", "draws", "repeats", "seed", "n_classes")
FLAGS = ("random_start", "keep_label", "across_channels", "through_mask", "verbose")
CHOICES = ("mode", "norm", "version")
OBJECTS = ("model", "surrogates", "defense")
numbers_ = st.sampled_from([NAN, -1, -0.5, -math.inf, "1", True])
BAD = {**{p: numbers_ for p in ("eps", "alpha", "decay", "label_weight", "max_p", "reverse_step", "inner_step",
                                 "eps_for_division")},
       **{p: st.one_of(numbers_, st.floats(0.1, 50).filter(lambda v: not v.is_integer())) for p in INTEGER},
       **{p: st.sampled_from(["yes", "no", 0.5, 2, None]) for p in FLAGS},
       **{p: st.one_of(st.text(string.ascii_letters, max_size=8), st.just(3)) for p in CHOICES},
       "budgets": st.sampled_from([[NAN], -0.5, [1.5], "x", [0.1, -1]])}
_ENTROPY = ("eps", "steps", "draws", "alpha", "random_start", "keep_label", "label_weight", "seed")
_TRANSFER = ("eps", "steps", "alpha", "decay", "reverse_step", "inner_step")
#: every parameter of every attack the package implements (besides the model, surrogates or defense): a change
#: to one fails here
OWN_PARAMETERS = {
    ("attack", "entropy"): _ENTROPY, ("attack", "adaptive_entropy"): ("mode", "through_mask", *_ENTROPY),
    ("attack", "salt_pepper"): ("steps", "repeats", "max_p", "across_channels", "seed", "budgets"),
    ("transfer attack", "mifgsm"): _TRANSFER[:4], ("transfer attack", "sam"): _TRANSFER,
    ("transfer attack", "cse"): _TRANSFER, ("transfer attack", "cwa"): _TRANSFER,
}
#: ... and of the standard (torchattacks) attacks, read from their classes: a new entry is tested without a line
#: here (each parameter checked by robustnb.attacks.base.TORCHATTACKS_PARAMETERS, and each needs a BAD strategy)
PARAMETERS = {**{("attack", n): tuple(p for p in mechanisms.settings("attack", n) if p not in OBJECTS)
                 for n in mechanisms.names("attack") if registry.ATTACKS.meta(n)["group"] == "standard"},
              **OWN_PARAMETERS}
ATTACK_PARAMETERS = [(kind, name, p) for (kind, name), params in PARAMETERS.items() for p in params]


def test_the_table_covers_every_parameter_of_every_registered_attack():
    assert {(k, n): tuple(p for p in mechanisms.settings(k, n) if p not in OBJECTS)
            for k in ("attack", "transfer attack") for n in mechanisms.names(k)} == PARAMETERS
    assert set(PARAMETERS["attack", "pgd"]) == {"eps", "alpha", "steps", "random_start"}  # read from torchattacks
    assert {p for *_, p in ATTACK_PARAMETERS} <= set(BAD), {p for *_, p in ATTACK_PARAMETERS} - set(BAD)


def _make(kind: str, name: str, **kw):
    if kind == "transfer attack":
        return mechanisms.make(kind, name, [_tiny()], **{"steps": 1, **kw})
    if name in ("entropy", "adaptive_entropy"):
        extra = {"defense": defenses.make_defense("bit_depth")} if name == "adaptive_entropy" else {}
        return mechanisms.make(kind, name, _split(), **{"eps": 4 / 255, "steps": 1, "draws": 1, **extra, **kw})
    if name == "salt_pepper":
        return mechanisms.make(kind, name, _tiny(), **{"steps": 2, "repeats": 1, **kw})
    return mechanisms.make(kind, name, _tiny(), **{"eps": 4 / 255, **kw})


@pytest.mark.parametrize("kind,name", sorted({(k, n) for k, n, _ in ATTACK_PARAMETERS}))
def test_every_attack_is_made_with_valid_settings(kind, name):
    assert _make(kind, name) is not None


@HYPOTHESIS
@given(st.data())
def test_every_attack_parameter_is_checked_where_the_attack_is_made(data):
    """NaN, negative, fractional steps, strings, non-bool flags ... for every parameter of every attack, the
    torchattacks ones included: the package's error, naming the parameter and what is allowed."""
    kind, name, param = data.draw(st.sampled_from(ATTACK_PARAMETERS))
    bad = data.draw(BAD[param])
    if param == "seed" and bad is None:
        return
    with pytest.raises(ConfigError) as err:
        _make(kind, name, **{param: bad})
    message = str(err.value)
    assert param in message and re.search(r"must be|allowed|choose one of", message), message


def test_a_nan_step_size_no_longer_gives_nan_images():
    x, y = torch.rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)
    for kw in ({"alpha": NAN}, {"steps": 2.5}, {"steps": -1}, {"random_start": "no"}, {"decay": NAN}):
        with pytest.raises(ConfigError, match=next(iter(kw))):
            mechanisms.make("attack", "mifgsm" if "decay" in kw else "pgd", _tiny(), eps=4 / 255, **kw)(x, y)
    with pytest.raises(ConfigError, match=r"restarts=-1 is out of range: allowed is \[0, inf\)"):
        from robustnb.attacks import adaptive_entropy_attack
        adaptive_entropy_attack(_split(), defenses.make_defense("bit_depth"), torch.rand(1, 3, 32, 32), 4 / 255,
                                steps=1, draws=1, restarts=-1)


# ------------------------------------------------------------------------------ 3. one value or several
def test_one_classifier_as_the_surrogates_is_an_ensemble_of_one_not_its_layers():
    model, x, y = _tiny(), torch.rand(3, 3, 8, 8), torch.tensor([0, 1, 2])
    for name in ("mifgsm", "sam", "cse", "cwa"):
        one = make_transfer_attack(name, model, 4 / 255, steps=2)(x, y)
        listed = make_transfer_attack(name, [model], 4 / 255, steps=2)(x, y)
        assert torch.equal(one, listed), name
    assert len(LogitEnsemble(model).members) == 1 and len(Ensemble(model).nodes) == 1
    with pytest.raises(ConfigError, match=r"surrogates must be a model or a sequence of them, got str"):
        make_transfer_attack("cwa", [model, "resnet18"], 4 / 255)
    with pytest.raises(ConfigError, match="surrogates must be a model or a sequence of them, got a dict"):
        make_transfer_attack("cwa", {"a": model}, 4 / 255)


def test_one_name_is_a_grid_of_one_not_its_letters(monkeypatch):
    monkeypatch.setattr(zoo, "get_split_model", lambda arch, em, lam, run, verbose=False: (arch, em, lam))
    ex = jobs.Execution("local")
    assert zoo.load_split_models("vgg", "hyperprior", 0.04, None, ex=ex) == {
        ("vgg", "hyperprior", 0.04): ("vgg", "hyperprior", 0.04)}
    assert zoo.load_split_models(("vgg",), ["hyperprior", "factorized"], [0.04], None, ex=ex).keys() == {
        ("vgg", "hyperprior", 0.04), ("vgg", "factorized", 0.04)}
    with pytest.raises(ConfigError, match="Unknown split architecture 'resnte'"):  # before any model loads
        zoo.load_split_models(["vgg", "resnte"], "hyperprior", 0.04, None, ex=ex)


def test_one_number_where_several_are_accepted():
    model, x, y = _tiny(), torch.rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)
    frame, _ = robustness_curve(model, x, y, 4 / 255, attacks="fgsm")
    assert frame["epsilon"].tolist() == [4 / 255]
    assert accuracy_at_budgets(torch.tensor([0.5, 0.0]), 0.1) == {0.1: 0.5}
    assert SaltAndPepper(model, budgets=np.float32(0.25)).budgets == (0.25,)
    assert [s for _, s, _ in corruptions.corruption_grid(x, "jpeg", np.int64(2))] == [2]


def test_a_plain_string_where_an_execution_is_expected(monkeypatch):
    assert jobs.as_execution("ray") == jobs.Execution("ray") and jobs.as_execution(None) == jobs.Execution()
    monkeypatch.setattr(zoo, "get_split_model", lambda arch, em, lam, run, verbose=False: arch)
    assert zoo.load_split_models("vgg", "hyperprior", 0.04, None, ex="local") == {("vgg", "hyperprior", 0.04): "vgg"}
    with pytest.raises(ConfigError, match=r"ex must be a robustnb.jobs.Execution .* got int"):
        jobs.as_execution(2)
    with pytest.raises(ConfigError, match="Unknown backend 'threads'"):
        jobs.as_execution("threads")


def test_one_job_where_jobs_are_expected():
    base = jobs.ModelJob("base", {"k": 1}, lambda: None)
    fine = jobs.ModelJob("fine", {"k": 2}, lambda: None, needs=base)
    assert fine.needs == (base,)
    assert [j.name for j in jobs._with_needs(fine)] == ["base", "fine"]


# ------------------------------------------------------------------------------ 4. execution settings, Ray deadlines
@pytest.mark.parametrize("kw", [dict(num_cpus=0), dict(num_cpus=-2), dict(num_cpus=1.5), dict(num_cpus="2"),
                                dict(num_cpus=True), dict(threads=0), dict(timeout_s=0), dict(timeout_s=NAN),
                                dict(address=""), dict(address=6379)])
def test_execution_settings_are_checked(kw):
    with pytest.raises(ConfigError, match=next(iter(kw))):
        jobs.Execution("ray", **kw)


class FakeRay:
    """What run_jobs uses of Ray: a cluster with ``cpus`` CPUs whose tasks never finish."""

    def __init__(self, cpus: float):
        self.cpus, self.submitted, self.cancelled, self.waits = cpus, [], [], []

    def cluster_resources(self):
        return {"CPU": self.cpus}

    def available_resources(self):
        return {"CPU": 0.0}

    def remote(self, **_):
        def submit(job, *needed):
            self.submitted.append(job.name)
            return f"ref-{job.name}"
        return lambda fn: type("Remote", (), {"remote": staticmethod(submit)})

    def put(self, blob):
        return blob

    def wait(self, refs, num_returns=1, timeout=None):
        assert timeout is not None, "a wait on Ray without a deadline"
        self.waits.append(timeout)
        import time
        time.sleep(min(timeout, 0.02))
        return [], refs

    def cancel(self, ref, force=False):
        self.cancelled.append(ref)


def _jobs():
    base = jobs.ModelJob("split-vgg-base", {"k": "base"}, lambda: None, cost=2.0)
    return [base, jobs.ModelJob("split-vgg-lam0.04", {"k": "fine"}, lambda: None, needs=(base,))]


def test_a_ray_wait_has_a_deadline_and_names_what_is_stuck(tmp_env, monkeypatch):
    fake = FakeRay(cpus=2)
    monkeypatch.setattr(jobs, "ray_init", lambda address=None, num_cpus=None: fake)
    with pytest.raises(TimeoutError) as err:
        jobs.run_jobs(_jobs(), jobs.Execution("ray", timeout_s=0.1), desc="split models")
    message = str(err.value)
    assert "no job finished in 0.1 s" in message and "2 of 2 split models" in message
    assert "split-vgg-base" in message and "split-vgg-lam0.04" in message and "0 of 2 CPUs free" in message
    assert sorted(fake.cancelled) == ["ref-split-vgg-base", "ref-split-vgg-lam0.04"]


def test_a_ray_with_no_cpu_is_refused_before_anything_is_sent(tmp_env, monkeypatch):
    fake = FakeRay(cpus=0)
    monkeypatch.setattr(jobs, "ray_init", lambda address=None, num_cpus=None: fake)
    with pytest.raises(ConfigError, match=r"has 0 CPUs: the 2 models to train \(split-vgg-base, split-vgg-lam0.04\)"):
        jobs.run_jobs(_jobs(), jobs.Execution("ray"))
    assert fake.submitted == [] and fake.waits == []


def test_ray_init_refuses_a_local_ray_without_cpus():
    with pytest.raises(ConfigError, match=r"num_cpus.*\[1, inf\)"):
        jobs.ray_init(None, 0)


# ------------------------------------------------------------------------------ 5. commands check before the work
@pytest.fixture
def no_work(monkeypatch):
    """``cli.reproduce`` replaced by a stub that records each call (the work) and returns a small table."""
    calls = []

    def reproduce(name, preset=None, seed=0, device="auto", verbose=True):
        calls.append(name)
        return pd.DataFrame({"number": ["a"], "ours": ["1"]})

    monkeypatch.setattr(cli, "reproduce", reproduce)
    return calls


def _cli(capsys, *argv) -> tuple[int, str]:
    code = cli.main(["reproduce", "getting_started", *argv])
    return code, capsys.readouterr().err


def test_reproduce_out_is_checked_before_the_chapter_runs(tmp_path, no_work, capsys):
    folder, blocker = tmp_path / "results", tmp_path / "a_file"
    folder.mkdir()
    blocker.write_text("mine")
    for out, why in ((folder, "is a folder"), (f"{tmp_path / 'new'}/", "is a folder"),
                     (blocker / "claims.csv", "is a file, not a folder"), (tmp_path / "a_file", "exists")):
        code, err = _cli(capsys, "--out", str(out))
        assert code == 2 and why in err, (out, err)
    assert no_work == []  # nothing ran
    out = tmp_path / "deeper" / "claims.csv"
    assert _cli(capsys, "--out", str(out))[0] == 0 and no_work == ["getting_started"]
    assert out.read_text().splitlines() == ["number,ours", "a,1"]


def _notebook(cells_, **metadata) -> dict:
    return {"cells": cells_, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}


def _code(source, outputs=(), count=None, checked=False):
    return {"cell_type": "code", "source": source, "outputs": list(outputs), "execution_count": count,
            "metadata": {"tags": [cells.NBVAL_TAG]} if checked else {}}


def _chapter_and_runs(tmp_path):
    chapter = tmp_path / "chapter.ipynb"
    chapter.write_text(json.dumps(_notebook([_code("import robustnb", checked=True), _code("1 / 0")])))
    stream = {"output_type": "stream", "name": "stdout", "text": "ok\n"}
    error = {"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero", "traceback": []}
    good = tmp_path / "good.ipynb"
    good.write_text(json.dumps(_notebook([_code("import robustnb", [stream], 1), _code("1 / 0", [], 2)])))
    failed = tmp_path / "failed.ipynb"
    failed.write_text(json.dumps(_notebook([_code("import robustnb", [stream], 1), _code("1 / 0", [error], 2)],
                                           papermill={"exception": True})))
    unfinished = tmp_path / "unfinished.ipynb"
    unfinished.write_text(json.dumps(_notebook([_code("import robustnb"), _code("1 / 0")])))
    return chapter, good, failed, unfinished


def test_book_nbval_refuses_a_failed_run_and_exits_non_zero(tmp_path, capsys):
    chapter, good, failed, unfinished = _chapter_and_runs(tmp_path)
    before = chapter.read_bytes()
    assert book_main.main(["nbval", str(chapter), str(failed)]) == 2
    err = capsys.readouterr().err
    assert "is a failed run" in err and "'1 / 0': ZeroDivisionError: division by zero" in err
    assert book_main.main(["nbval", str(chapter), str(unfinished)]) == 2
    assert "was not run there" in capsys.readouterr().err
    assert chapter.read_bytes() == before
    assert book_main.main(["nbval", str(chapter), str(good)]) == 0
    assert json.loads(chapter.read_text())["cells"][0]["outputs"][0]["text"] == "ok\n"


def _no_execution(*a, **k):  # the command must refuse before it executes anything
    raise AssertionError("executed")


def _book_files():
    return {p: p.read_bytes() for p in (ROOT / "_toc.yml", ROOT / "book" / "runtimes.json", ROOT / "book" / "intro.md")}


def test_book_new_refuses_a_bad_name_before_writing(monkeypatch, capsys):
    monkeypatch.setattr(runtimes.subprocess, "run", _no_execution)
    before = _book_files()
    for name in ("book/x.ipynb", "chapter.md", "My study", "2nd", "getting_started"):
        assert book_main.main(["new", name, "A title"]) == 2, name
        assert not (ROOT / "robustnb" / "chapters" / f"{name}.py").exists() or name == "getting_started"
    err = capsys.readouterr().err
    assert "lower-case Python identifier" in err and "'getting_started' exists" in err
    assert book_main.main(["new", "fresh_study", "A title", "--part", "Nowhere"]) == 2
    assert "Unknown part 'Nowhere'" in capsys.readouterr().err
    assert _book_files() == before


def _scratch_book(root):
    """The files a new chapter touches, in an empty repository layout."""
    for d in ("book", "robustnb/chapters", "tests/chapters"):
        (root / d).mkdir(parents=True)
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nparts:\n  - caption: Summary\n    chapters:\n"
                                   "      - file: book/claims\n")
    (root / "book" / "runtimes.json").write_text("{}\n")
    (root / "book" / "intro.md").write_text("| chapter | a | b | c |\n| **whole book** | x | y | z |\n")
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_book_new_removes_what_it_made_when_the_execution_fails(tmp_path, monkeypatch):
    before = _scratch_book(tmp_path)
    monkeypatch.setattr(runtimes.subprocess, "run",
                        lambda *a, **k: type("P", (), {"returncode": 1, "stdout": "", "stderr": "kernel died"})())
    with pytest.raises(ConfigError, match="kernel died"):
        scaffold.chapter("new_study", "A title", root=tmp_path)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


# ------------------------------------------------------------------------------ 6. nothing the user owns is overwritten
def test_nothing_the_user_owns_is_overwritten(tmp_path, no_work, monkeypatch, capsys):
    """Every command path of this issue, each given something the user already has: refused, byte for byte
    unchanged."""
    monkeypatch.setattr(runtimes.subprocess, "run", _no_execution)
    owned = {**_book_files(), tmp_path / "claims.csv": b"claim,ours\nmine,1\n", tmp_path / "results" / "keep.csv": b"keep\n",
             tmp_path / "chapter_x": b"not a notebook\n", tmp_path / "old.ipynb": b'{"cells": []}\n'}
    for path, blob in owned.items():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(blob)
    (tmp_path / "book").mkdir()
    chapter, _, failed, _ = _chapter_and_runs(tmp_path / "book")
    owned[chapter] = chapter.read_bytes()
    calls = [lambda: cli.main(["reproduce", "getting_started", "--out", str(tmp_path / "claims.csv")]),
             lambda: cli.main(["reproduce", "getting_started", "--out", str(tmp_path / "results")]),
             lambda: book_main.main(["new", str(tmp_path / "chapter_x"), "Title"]),
             lambda: book_main.main(["new", str(tmp_path / "old.ipynb"), "Title"]),
             lambda: book_main.main(["new", "getting_started", "Title"]),
             lambda: book_main.main(["nbval", str(chapter), str(failed)]),
             lambda: book_main.main(["nbval", str(chapter), str(chapter)])]
    for call in calls:
        assert call() == 2
    capsys.readouterr()
    assert {p: p.read_bytes() for p in owned} == owned and no_work == []
    with pytest.raises(FileExistsError):
        cli.write_new(pd.DataFrame({"a": [1]}), tmp_path / "claims.csv")  # made between the check and the write
    assert (tmp_path / "claims.csv").read_bytes() == owned[tmp_path / "claims.csv"]
