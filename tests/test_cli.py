"""``python -m robustnb reproduce`` (robustnb.cli): the chapter list, its errors, each chapter's ``reproduce``
against its notebook, and the command at the smoke preset for every chapter (marked ``chapters``)."""

import ast
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from robustnb import book, cli, stats
from robustnb.config import cache_dir

NAMES = [p.stem for p in book.chapters()]


def _params():
    return [pytest.param(name, id=name) for name in NAMES]


#: what a cluster node or a GPU box need not install: the command runs with these made impossible to import
NOTEBOOK_TOOLS = ("papermill", "nbformat", "nbclient", "myst_nb", "jupyter_book")


@pytest.fixture
def bare_env(tmp_path) -> dict:
    """The environment with :data:`NOTEBOOK_TOOLS` shadowed by modules that raise ImportError (as if absent)."""
    stubs = tmp_path / "no_notebook_tools"
    stubs.mkdir()
    for name in NOTEBOOK_TOOLS:
        (stubs / f"{name}.py").write_text(f"raise ImportError('{name} is not installed (test_cli)')\n")
    path = os.pathsep.join(p for p in (str(stubs), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path)


def command(*args, timeout=120, env=None):
    return subprocess.run([sys.executable, "-m", "robustnb", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=book.ROOT, env=env)


# ------------------------------------------------------------------------------------------ the command line
def test_the_command_lists_the_books_chapters(bare_env):
    proc = command("reproduce", "--list", env=bare_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == sorted(NAMES) == cli.chapter_names()


def test_an_unknown_chapter_is_refused_naming_the_chapters():
    proc = command("reproduce", "entropy_attack", "--preset", "smoke")
    assert proc.returncode == 2 and not proc.stdout
    assert "Unknown chapter 'entropy_attack'" in proc.stderr
    assert all(f"'{n}'" in proc.stderr for n in NAMES), proc.stderr


def test_no_chapter_and_bad_settings_are_refused_with_the_allowed_values(capsys):
    for argv, allowed in ((["reproduce"], NAMES), (["reproduce", "split_computing", "--preset", "gpu"],
                                                   ["smoke", "cpu", "full"]),
                          (["reproduce", "split_computing", "--device", "tpu"], ["auto", "cpu", "cuda"])):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and all(a in err for a in allowed), err


def test_the_command_needs_no_notebook_tools(bare_env):
    """What a GPU box or a cluster node must install: the command and every chapter module it runs import
    neither robustnb.book nor any of :data:`NOTEBOOK_TOOLS` (here made impossible to import)."""
    code = ("import sys; from robustnb import cli; [cli.chapter_module(n) for n in cli.chapter_names()]; "
            "print('robustnb.book' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=bare_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"
    check = subprocess.run([sys.executable, "-c", "import nbformat"], capture_output=True, text=True, env=bare_env)
    assert "nbformat is not installed" in check.stderr, "the stand-ins did not shadow the notebook tools"


def test_a_chapter_without_reproduce_fails_clearly(monkeypatch, capsys):
    import types

    monkeypatch.setattr(cli, "chapter_names", lambda: ["notebook_only"])
    monkeypatch.setitem(sys.modules, "robustnb.chapters.notebook_only", types.ModuleType("notebook_only"))
    assert cli.main(["reproduce", "notebook_only", "--preset", "smoke"]) == 2
    err = capsys.readouterr().err
    assert "notebook_only.py has no reproduce(run)" in err and "book/notebook_only.ipynb" in err


def test_the_printed_table_and_the_claims_not_measured():
    from robustnb.chapters import split_computing as ch

    first, *rest = ch.PAPER_CLAIMS
    pc = ch.PAPER_CLAIMS[first]
    table = stats.claims_table(ch.CHAPTER, {first: pc}, {first: stats.Estimate(0.5, 0.4, 0.6, 100)})
    text = cli.format_table(table)
    header = text.splitlines()[0]
    assert [h.strip() for h in header.strip("|").split("|")] == list(cli.SHOWN)
    assert pc.claim in text and table["ours"][0] in text and "claim_id" not in text
    assert cli.not_measured(ch.CHAPTER, table) == rest
    numbers = pd.DataFrame({"number": ["gs_n_test"], "ours": ["200"]})
    assert "gs_n_test" in cli.format_table(numbers) and cli.not_measured("getting_started", numbers) == []


# ------------------------------------------------------------------------------------------ same calls as the book
def _notebook_calls(name: str) -> list[tuple]:
    """Every ``ch.<...>(...)`` call of the chapter's notebook, in reading order: (function, arguments)."""
    nb = json.loads((book.ROOT / "book" / f"{name}.ipynb").read_text())
    calls = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        tree = ast.parse("".join(cell["source"]))
        found = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func).startswith("ch.")]
        calls += [_call(n, ast.unparse(n.func).removeprefix("ch."))
                  for n in sorted(found, key=lambda n: (n.lineno, n.col_offset))]
    return calls


def _call(node: ast.Call, func: str) -> tuple:
    """(function, arguments, keywords) as source text; the notebook's ``ch.NAME`` reads as the module's ``NAME``."""
    def text(a):
        return re.sub(r"\bch\.", "", ast.unparse(a))
    return func, tuple(text(a) for a in node.args), tuple((k.arg, text(k.value)) for k in node.keywords)


def _reproduce_calls(module) -> list[tuple]:
    """The calls ``module.reproduce`` makes of the chapter's own functions and classes, in order."""
    tree = ast.parse(inspect.getsource(module.reproduce))
    own = {n for n, obj in vars(module).items() if getattr(obj, "__module__", None) == module.__name__}
    found = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func).split(".")[0] in own]
    return [_call(n, ast.unparse(n.func)) for n in sorted(found, key=lambda n: (n.lineno, n.col_offset))]


@pytest.mark.parametrize("name", _params())
def test_reproduce_makes_the_notebooks_calls_in_its_order(name):
    """``reproduce(run)`` calls nothing of its chapter that the notebook does not call, with the same arguments,
    in the notebook's order (a subsequence of the notebook's ``ch.`` calls), so both read the same cache."""
    module = importlib.import_module(f"robustnb.chapters.{name}")
    mine, theirs = _reproduce_calls(module), _notebook_calls(name)
    assert mine, f"{name}.reproduce calls none of its chapter's functions"
    it = iter(theirs)
    missing = [c for c in mine if c not in it]
    assert not missing, f"{name}.reproduce makes calls the notebook does not make, or not in its order: {missing}"


# ------------------------------------------------------------------------------------------ every chapter at smoke
def _cache_files() -> set[str]:
    root = cache_dir()
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "progress.log"}


def _smoke_build_glue(name: str) -> dict | None:
    """The values the smoke book build glued for chapter ``name`` (``make test`` builds it first, with the same
    ``ROBUSTNB_CACHE``, and says where in ``ROBUSTNB_BOOK_HTML``), or None without such a build."""
    if not os.environ.get("ROBUSTNB_BOOK_HTML"):
        return None
    executed = Path(os.environ["ROBUSTNB_BOOK_HTML"]).parent / "jupyter_execute" / "book"
    notebook, store = executed / f"{name}.ipynb", executed / f"{name}.glue.json"
    if not (notebook.exists() and store.exists()) or "preset='smoke', seed=0" not in notebook.read_text():
        return None
    return {key: "".join(next((v for k, v in out["data"].items() if k.endswith("text/plain")), "")).strip("'\"")
            for key, out in json.loads(store.read_text()).items()}


def _squash(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


@pytest.mark.chapters
@pytest.mark.parametrize("name", _params())
def test_reproduce_runs_every_chapter_at_smoke(name, tmp_path, bare_env):
    """The command at ``smoke`` for every chapter, without the notebook tools: its claims table (every declared claim measured or listed as
    not measured), the same as the book's. After ``make test``'s smoke build (same cache) it must equal what the
    chapter glued and compute nothing (every experiment read from the book's cache); without that build it runs
    twice and the second run must compute nothing and print the same table."""
    module = importlib.import_module(f"robustnb.chapters.{name}")
    before, out = _cache_files(), tmp_path / "claims.csv"
    proc = command("reproduce", name, "--preset", "smoke", "--seed", "0", "--out", str(out), timeout=1500,
                   env=bare_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(out, dtype=str, keep_default_na=False)
    declared = getattr(module, "PAPER_CLAIMS", {})
    if declared:
        extra = [c for c in table.columns if c not in stats.CLAIM_COLUMNS]
        assert list(table.columns)[:len(stats.CLAIM_COLUMNS)] == list(stats.CLAIM_COLUMNS) and extra in ([], ["stand_in"])
        assert set(table["chapter"]) == {name}
        ids = list(table["claim_id"])
        assert ids and ids == [c for c in declared if c in ids], f"{name}: claim ids not those of PAPER_CLAIMS"
        unmeasured = [c for c in declared if c not in ids or table.loc[table.claim_id == c, "ours"].iloc[0] ==
                      stats.UNMEASURED]
        assert (f"not measured at this preset ({len(unmeasured)}): {', '.join(unmeasured)}" in proc.stdout
                if unmeasured else "not measured" not in proc.stdout)
        for row in table.itertuples():
            assert row.claim in proc.stdout and row.ours in proc.stdout and row.verdict in proc.stdout
        rows = {r.claim_id: (r.ours, r.verdict, r.holm or ("not tested" if r.role == "primary" else "not counted"))
                for r in table.itertuples()}
    else:
        assert list(table.columns) == ["number", "ours"] and len(table)
        rows = {r.number: (r.ours,) for r in table.itertuples()}
    glued = _smoke_build_glue(name)
    if glued is not None:
        book_rows = {k: (glued[k], glued[f"{k}_verdict"], glued[f"{k}_holm"]) if declared else (glued[k],)
                     for k in rows}
        assert {k: tuple(map(_squash, v)) for k, v in rows.items()} == \
               {k: tuple(map(_squash, v)) for k, v in book_rows.items()}
        assert all(glued[c] == book.NOT_MEASURED for c in declared if c not in rows)
        assert _cache_files() <= before, f"{name}: computed what the book's build had cached: " \
                                         f"{sorted(_cache_files() - before)}"
    else:
        first, middle, out2 = out.read_text(), _cache_files(), tmp_path / "again.csv"  # --out never overwrites
        again = command("reproduce", name, "--preset", "smoke", "--out", str(out2), timeout=1500, env=bare_env)
        assert again.returncode == 0, again.stderr[-3000:]
        assert _cache_files() == middle, f"{name}: the second run computed {sorted(_cache_files() - middle)}"
        assert out2.read_text() == first


@pytest.mark.chapters
def test_the_gpu_check_script_times_a_chapter_and_records_what_the_deadline_left_out(tmp_path):
    """.ci/gpu_check.sh (the device check that wrote runtimes.json's ``gpu`` entry), here at ``smoke`` on the
    CPU: a chapter run through the command line is timed with its exit code and its claims table kept; a step
    the deadline leaves no time for is recorded as not started, not dropped."""

    def check(deadline, stream):
        out = tmp_path / f"out{deadline}"
        env = dict(os.environ, OUT=str(out), PRESET="smoke", DEVICE="cpu", WHEELS="none", PY=sys.executable,
                   STREAM_A=stream, STREAM_B="")
        proc = subprocess.run(["bash", ".ci/gpu_check.sh", str(deadline)], cwd=book.ROOT, env=env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return out, [json.loads(line) for line in (out / "times.jsonl").read_text().splitlines()]

    out, rows = check(800, "getting_started")
    assert len(rows) == 1 and rows[0]["chapter"] == "getting_started" and rows[0]["rc"] == 0, rows
    assert rows[0]["seconds"] > 0 and "gs_clean_acc" in (out / "summary.txt").read_text()
    with tarfile.open(out / "results.tar.gz") as tar:
        assert "./getting_started.csv" in tar.getnames()
    _, rows = check(1, "full_paths_tests split_computing")
    assert [(r["chapter"], r["rc"]) for r in rows] == [("full_paths_tests", "not started (deadline)"),
                                                       ("split_computing", "not started (deadline)")]
