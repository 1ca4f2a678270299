"""Publishing the book: the GitHub Actions workflow that builds the `cpu` book and deploys it to GitHub Pages
(.github/workflows/book.yml) validates against the GitHub-workflows schema that check-jsonschema ships (no
network), does what the README's "Publishing" section says, and that section is there."""

import re
import subprocess
import sys

import yaml

from conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"


def check(path):
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                           str(path)], capture_output=True, text=True, timeout=120)


def test_the_workflow_validates():
    r = check(WORKFLOW)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_broken_workflow_does_not(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(WORKFLOW.read_text().replace("runs-on: ubuntu-latest", "runs_on: ubuntu-latest", 1))
    assert check(bad).returncode != 0


def _steps(job):
    return {s.get("uses", "").split("@")[0] or s.get("run", ""): s for s in job["steps"]}


def test_it_builds_the_cpu_book_with_a_cache_and_deploys_it():
    wf = yaml.safe_load(WORKFLOW.read_text())
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as True
    assert "main" in on["push"]["branches"] and "workflow_dispatch" in on
    build, deploy = wf["jobs"]["build"], wf["jobs"]["deploy"]
    assert build["env"]["ROBUSTNB_PRESET"] == "cpu"
    steps = _steps(build)
    assert any(re.search(r"\bmake book\b.*PRESET=cpu", run) for run in steps)
    # restored and saved separately, per run (tests/test_workflow.py checks the keys, the saves and the timeouts)
    restores = [s["with"] for s in build["steps"] if s.get("uses", "").startswith("actions/cache/restore@")]
    cache_dir = build["env"]["ROBUSTNB_CACHE"].replace("${{ github.workspace }}/", "")
    assert any(cache_dir in c["path"] and c.get("restore-keys") for c in restores)
    notebooks = next(c for c in restores if "_build/.jupyter_cache" in c["path"])  # a prose edit re-executes nothing
    assert notebooks.get("restore-keys")
    assert steps["actions/upload-pages-artifact"]["with"]["path"] == "_build/html"
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert "actions/deploy-pages" in _steps(deploy)


def test_the_readme_says_how_a_fork_publishes_its_copy():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Publishing", 1)
    assert len(section) == 2, "README.md has no Publishing section"
    text = section[1].split("\n## ", 1)[0]
    assert ".github/workflows/book.yml" in text and "GitHub Actions" in text and "fork" in text
