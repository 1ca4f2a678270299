"""The Pages workflow (.github/workflows/book.yml) keeps what a cold run trains and fits GitHub's limits.

A cold `cpu` build trains for hours, so: the model cache is restored and saved in separate steps (never the combined
``actions/cache``, which saves only when the job succeeds), saved with ``always()`` (failure, timeout, cancel) under a
key unique to the run, restored by prefix; old entries are pruned; the chapters are warmed by jobs whose measured cold
seconds (book/runtimes.json) fit their timeouts, each job under GitHub's 6 h; only main deploys. Whether the file is a
valid workflow at all is tests/test_publishing.py's check (check-jsonschema)."""

import json
import re

import pytest
import yaml

from conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
GITHUB_JOB_LIMIT_MIN = 360
JOB_MARGIN_MIN = 15       # a job's timeout stays this far below GitHub's limit
SAVE_MARGIN_MIN = 20      # the long step's own timeout leaves the job this long to save
RUNTIME_FACTOR = 1.5      # measured cold seconds times this must fit a step's timeout
MODEL_CACHE = ".cache/robustnb/cache"  # ROBUSTNB_CACHE, relative to the workspace


@pytest.fixture(scope="module")
def wf():
    return yaml.safe_load(WORKFLOW.read_text())


@pytest.fixture(scope="module")
def jobs(wf):
    return wf["jobs"]


def _uses(step) -> str:
    return step.get("uses", "").split("@")[0]


def _paths(step) -> list[str]:
    return [p.strip() for p in str(step.get("with", {}).get("path", "")).splitlines() if p.strip()]


def _model_cache_steps(job, action: str) -> list[dict]:
    return [s for s in job.get("steps", []) if _uses(s) == f"actions/cache/{action}" and MODEL_CACHE in _paths(s)]


def _expr(value) -> str:
    """An `if:` without its optional ${{ }}."""
    text = str(value).strip()
    m = re.fullmatch(r"\$\{\{(.*)\}\}", text, re.S)
    return (m.group(1) if m else text).strip()


def _cold_seconds() -> dict[str, float]:
    """Each chapter's cold time at ``cpu``: measured, else estimated (a new chapter's, until the bench runs it)."""
    cpu = json.loads((ROOT / "book" / "runtimes.json").read_text())["cpu"]
    return {**cpu.get("estimated_seconds", {}), **cpu["seconds"]}


def _toc_chapters() -> list[str]:
    """The executed chapters of _toc.yml (notebooks; the intro and the claims summary are markdown)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    return [f.split("/")[-1] for f in files if (ROOT / f"{f}.ipynb").exists()]


def _warm_ups(jobs) -> dict[str, tuple[str, dict, list[str]]]:
    """``{name: (job id, the reproducing step, its chapters)}``: every job (matrix entry) whose step runs
    ``python -m robustnb reproduce`` over ``matrix.chapters``."""
    found = {}
    for job_id, job in jobs.items():
        step = next((s for s in job.get("steps", []) if "robustnb reproduce" in s.get("run", "")), None)
        if step is None:
            continue
        entries = job.get("strategy", {}).get("matrix", {}).get("include") or [{}]
        for entry in entries:
            found[f"{job_id}-{entry.get('part', '')}".rstrip("-")] = (job_id, step, entry.get("chapters", "").split())
    return found


def _book_job(jobs) -> tuple[str, dict, dict]:
    for job_id, job in jobs.items():
        step = next((s for s in job.get("steps", []) if re.search(r"\bmake book\b.*PRESET=cpu", s.get("run", ""))),
                    None)
        if step is not None:
            return job_id, job, step
    pytest.fail("no job runs `make book PRESET=cpu`")


# ---------------------------------------------------------------------------------------------------------- caches
def test_no_step_uses_the_combined_cache_action(jobs):
    """actions/cache saves in its post step only when the job succeeded: a failed cold run would lose every model."""
    combined = [(job_id, s.get("name", s["uses"])) for job_id, job in jobs.items() for s in job.get("steps", [])
                if s.get("uses", "").startswith("actions/cache@")]
    assert not combined, f"use actions/cache/restore and actions/cache/save instead: {combined}"


def test_every_job_that_restores_the_models_saves_them_always_under_a_key_of_its_run(jobs):
    book_id, _, _ = _book_job(jobs)
    restoring = {job_id: job for job_id, job in jobs.items() if _model_cache_steps(job, "restore")}
    assert book_id in restoring, f"the book job ({book_id}) does not restore {MODEL_CACHE}"
    for job_id, job in restoring.items():
        for restore in _model_cache_steps(job, "restore"):
            assert restore["with"].get("restore-keys", "").strip(), \
                f"{job_id}: restoring {restore['with']['key']} without a restore prefix finds no earlier run's cache"
        saves = _model_cache_steps(job, "save")
        assert saves, f"{job_id} restores the model cache but never saves it"
        for save in saves:
            assert "always()" in _expr(save.get("if", "")), \
                f"{job_id}: the save step must run on failure, timeout and cancel (if: always())"
            key = save["with"]["key"]
            assert "github.run_id" in key and "github.run_attempt" in key, \
                f"{job_id}: a cache key is immutable, so every run (and re-run) needs a key of its own: {key}"
            assert job.get("steps").index(save) > max(i for i, s in enumerate(job["steps"]) if "run" in s), \
                f"{job_id}: the model cache is saved before the job's last command ran"


def _expand(text: str, job_id: str, entry: dict) -> str:
    """``text`` with ``${{ github.job }}`` and ``${{ matrix.X }}`` filled in for one job (matrix entry)."""
    text = re.sub(r"\$\{\{\s*github\.job\s*\}\}", job_id, text)
    return re.sub(r"\$\{\{\s*matrix\.(\w+)\s*\}\}", lambda m: str(entry[m.group(1)]), text)


def _families(jobs, action: str, first: bool = False) -> dict[str, list[str]]:
    """``{job id: [...]}``: for saves the key's fixed part (before the run id), for restores every restore prefix
    (``first``: each step's first), expanded per matrix entry."""
    out = {}
    for job_id, job in jobs.items():
        entries = job.get("strategy", {}).get("matrix", {}).get("include") or [{}]
        for step in _model_cache_steps(job, action):
            texts = [step["with"]["key"]] if action == "save" else step["with"].get("restore-keys", "").splitlines()
            texts = [text for text in texts if text.strip()][:1] if first else texts
            out.setdefault(job_id, []).extend(_expand(text.strip(), job_id, entry).split("${{ github.run_id }}")[0]
                                              for text in texts if text.strip() for entry in entries)
    return out


def test_every_save_is_found_by_a_later_restore(jobs):
    """restore-keys match by prefix; a save whose family (its key without the run) no restore asks for is never read
    again. And the cache version covers the path list, so every step of the model cache names the same paths."""
    prefixes = {p for ps in _families(jobs, "restore").values() for p in ps}
    own = _families(jobs, "restore", first=True)
    for job_id, families in _families(jobs, "save").items():
        for family in families:
            assert family in prefixes, f"{job_id}: no restore asks for the entries it saves ({family}...)"
            # a re-run, or the next run, of a job that failed goes on from what it saved
            assert family in own.get(job_id, []), f"{job_id} saves {family}... but restores other entries first"
    steps = [s for job in jobs.values() for a in ("save", "restore") for s in _model_cache_steps(job, a)]
    assert len({tuple(_paths(s)) for s in steps}) == 1, "the model-cache steps name different paths"


def test_the_long_steps_stop_before_their_job_so_that_it_saves(jobs):
    """At a job's own timeout GitHub may end it before the always() steps ran; a step timeout leaves time to save."""
    book_id, book, make_book = _book_job(jobs)
    long_steps = [(book_id, book, make_book)] + [(j, jobs[j], s) for j, s, _ in _warm_ups(jobs).values()]
    for job_id, job, step in long_steps:
        assert "timeout-minutes" in step, f"{job_id}: `{step.get('name', step['run'])}` has no timeout of its own"
        assert step["timeout-minutes"] + SAVE_MARGIN_MIN <= job["timeout-minutes"], \
            f"{job_id}: the step's timeout leaves under {SAVE_MARGIN_MIN} min to save"


def test_old_cache_entries_are_pruned(jobs):
    pruning = {job_id: job for job_id, job in jobs.items()
               if any(re.search(r"gh cache delete|gh api .*actions/caches", s.get("run", ""))
                      for s in job.get("steps", []))}
    assert pruning, "no step deletes older cache entries (gh cache delete, or the actions/caches API)"
    for job_id, job in pruning.items():
        assert job.get("permissions", {}).get("actions") == "write", f"{job_id}: deleting caches needs actions: write"
        assert "GH_TOKEN" in job.get("env", {}) or any("GH_TOKEN" in s.get("env", {}) for s in job["steps"])
        saving = {j for j, other in jobs.items() if _model_cache_steps(other, "save")}
        needs = job.get("needs", [])
        needs = {needs} if isinstance(needs, str) else set(needs)
        assert saving <= needs, f"{job_id} may delete entries before {sorted(saving - needs)} saved theirs"
        assert "always()" in _expr(job.get("if", "")), f"{job_id} must prune after a failed or cancelled run too"


# ---------------------------------------------------------------------------------------------------------- deploy
def test_only_main_deploys(jobs):
    deploying = [job_id for job_id, job in jobs.items()
                 if any(_uses(s) == "actions/deploy-pages" for s in job.get("steps", []))]
    assert deploying
    for job_id in deploying:
        condition = _expr(jobs[job_id].get("if", ""))
        assert re.fullmatch(r"github\.ref\s*==\s*'refs/heads/main'", condition), \
            f"{job_id} must deploy from main only (if: github.ref == 'refs/heads/main'), not: {condition!r}"


# ------------------------------------------------------------------------------------------------------- time limits
def test_every_job_has_a_timeout_under_githubs_limit(jobs):
    for job_id, job in jobs.items():
        minutes = job.get("timeout-minutes")
        assert isinstance(minutes, int), f"{job_id} has no timeout-minutes (GitHub's default is its 6 h limit)"
        assert minutes <= GITHUB_JOB_LIMIT_MIN - JOB_MARGIN_MIN, f"{job_id}: {minutes} min leaves no margin"


def test_each_warm_up_fits_its_timeout_by_the_measured_cold_runtimes(jobs):
    seconds = _cold_seconds()
    warm = _warm_ups(jobs)
    assert warm, "no job warms the model cache with `python -m robustnb reproduce` before the book job"
    for name, (_, step, chapters) in warm.items():
        assert chapters, f"{name} reproduces no chapter"
        assert "--preset cpu" in step["run"], f"{name} does not reproduce at the cpu preset"
        unmeasured = [c for c in chapters if c not in seconds]
        assert not unmeasured, f"{name}: no cold cpu time in book/runtimes.json for {unmeasured}"
        total = sum(seconds[c] for c in chapters)
        assert total * RUNTIME_FACTOR < step["timeout-minutes"] * 60, \
            f"{name}: {total / 60:.0f} min measured cold, x{RUNTIME_FACTOR} does not fit {step['timeout-minutes']} min"


def test_every_chapter_is_warmed_or_within_the_book_jobs_budget(jobs):
    book_id, book, make_book = _book_job(jobs)
    warm = _warm_ups(jobs)
    warmed = [c for _, _, chapters in warm.values() for c in chapters]
    known = {p.stem for p in (ROOT / "robustnb" / "chapters").glob("*.py") if not p.stem.startswith("_")}
    assert set(warmed) <= known, f"not chapters of `python -m robustnb reproduce`: {sorted(set(warmed) - known)}"
    assert len(warmed) == len(set(warmed)), "a chapter is warmed twice"
    toc = _toc_chapters()
    assert "claims" not in toc and "split_computing" in toc
    seconds = _cold_seconds()
    left = [c for c in toc if c not in warmed]
    assert all(c in seconds for c in left), f"no cold cpu time in book/runtimes.json for {left}"
    budget_min = make_book.get("timeout-minutes", book["timeout-minutes"])
    assert sum(seconds[c] for c in left) * RUNTIME_FACTOR < budget_min * 60, \
        f"the book job trains {left} itself ({sum(seconds[c] for c in left) / 60:.0f} min cold), over {budget_min} min"
    # the book job waits for the warm-ups and restores each one's cache
    needs = book.get("needs", [])
    needs = {needs} if isinstance(needs, str) else set(needs)
    restored = set(_families(jobs, "restore").get(book_id, []))
    saved = _families(jobs, "save")
    for job_id in {job_id for job_id, _, _ in warm.values()}:
        assert job_id in needs, f"{book_id} does not wait for {job_id}"
        missing = set(saved.get(job_id, [])) - restored
        assert not missing, f"{book_id} does not restore the cache of {sorted(missing)}"


def test_the_split_models_are_trained_once_before_the_chapters_that_load_them(jobs):
    """entropy attacks, frequency analysis and the TV defense load split computing's models: in its job, after it
    (two jobs side by side would each train them)."""
    for _, _, chapters in _warm_ups(jobs).values():
        if "split_computing" in chapters:
            later = chapters[chapters.index("split_computing") + 1:]
            assert {"entropy_attacks", "frequency_analysis", "tv_defense"} <= set(later), chapters
            break
    else:
        pytest.fail("no job warms split_computing")


# ------------------------------------------------------------------------------------------------- the cache archive
def test_main_attaches_the_cpu_archive_where_the_colab_cell_fetches_it(wf, jobs):
    """After `make book`, main exports the cache (`python -m robustnb cache export`) and one job of its own, the only
    one that may write to the repository, attaches it to the release asset that _config.yml's `robustnb:
    cache_archive` names (the URL every chapter's Colab cell imports), replacing the last build's."""
    book_id, book, make_book = _book_job(jobs)
    steps = book["steps"]
    export = next((s for s in steps if "robustnb cache export" in s.get("run", "")), None)
    assert export is not None, f"{book_id} does not export the cache (python -m robustnb cache export)"
    assert steps.index(export) > steps.index(make_book), "the cache is exported before the book was built"
    assert re.fullmatch(r"github\.ref\s*==\s*'refs/heads/main'", _expr(export.get("if", ""))), \
        "only main's build exports the archive"
    archive_path = export["run"].split("cache export", 1)[1].split()[0]
    upload = next((s for s in steps if _uses(s) == "actions/upload-artifact"
                   and _paths(s) == [archive_path]), None)
    assert upload is not None and _expr(upload.get("if", "")) == _expr(export["if"]), \
        f"{book_id} does not hand {archive_path} on as an artifact (main only)"
    releasing = {job_id: job for job_id, job in jobs.items()
                 if any("gh release upload" in s.get("run", "") for s in job.get("steps", []))}
    assert list(releasing) != [book_id] and len(releasing) == 1, "one job of its own attaches the archive"
    (job_id, job), = releasing.items()
    needs = job.get("needs", [])
    assert book_id in ({needs} if isinstance(needs, str) else set(needs))
    assert re.fullmatch(r"github\.ref\s*==\s*'refs/heads/main'", _expr(job.get("if", ""))), f"{job_id}: main only"
    download = next(s for s in job["steps"] if _uses(s) == "actions/download-artifact")
    assert download["with"]["name"] == upload["with"]["name"]
    run = next(s["run"] for s in job["steps"] if "gh release upload" in s.get("run", ""))
    assert "--clobber" in run and "gh release create" in run, "create the release once, then replace its asset"
    env = job["env"]
    assert env["ASSET"] == archive_path.rsplit("/", 1)[-1] and "GH_TOKEN" in env
    # the one place that names the URL, and the workflow, agree
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo = cfg["repository"]["url"].rstrip("/")
    assert cfg["robustnb"]["cache_archive"] == f"{repo}/releases/download/{env['RELEASE']}/{env['ASSET']}"
    # least privilege: this job alone writes contents; the workflow's default stays read-only
    assert job["permissions"] == {"contents": "write"}
    assert wf["permissions"] == {"contents": "read"}
    writers = [j for j, other in jobs.items() if other.get("permissions", {}).get("contents") == "write"]
    assert writers == [job_id], f"only {job_id} may write to the repository, not {writers}"
