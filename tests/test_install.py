"""The install story: what requirements.txt, pyproject.toml and constraints.txt promise, and that
Ray Tune imports and runs in the environment the tests run in (CI's pinned job and its loose job alike).

A Colab runtime ships numpy 2; compressai declares numpy<2 and torchattacks requests~=2.25.1, so both are kept
out of the package's core dependencies and installed with ``--no-deps`` there (see requirements.txt).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
NO_DEPS = "# no-deps"


def _requirements_txt() -> dict[str, tuple[Requirement, bool]]:
    """name -> (requirement, installed with --no-deps on Colab)"""
    out = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if spec:
            req = Requirement(spec)
            out[canonicalize_name(req.name)] = (req, NO_DEPS in line)
    return out


def _pyproject() -> tuple[dict[str, Requirement], dict[str, dict[str, Requirement]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    as_dict = lambda specs: {canonicalize_name(r.name): r for r in map(Requirement, specs)}  # noqa: E731
    return as_dict(project["dependencies"]), {k: as_dict(v) for k, v in project.get("optional-dependencies", {}).items()}


def test_requirements_and_pyproject_list_the_same_packages_with_the_same_bounds():
    req = _requirements_txt()
    core, extras = _pyproject()
    listed = {**core, **extras.get("book", {}), **extras.get("pinned", {})}
    assert set(req) == set(listed), "requirements.txt and pyproject.toml (core + book + pinned) differ"
    for name, r in listed.items():
        assert r.specifier == req[name][0].specifier, f"{name}: {r.specifier} in pyproject, {req[name][0].specifier} in requirements.txt"


def test_no_deps_packages_stay_out_of_the_core_dependencies():
    """Installing the package in Colab must not pull a numpy<2 (or requests 2.25) pin back in."""
    req = _requirements_txt()
    core, extras = _pyproject()
    no_deps = {name for name, (_, flag) in req.items() if flag}
    assert {"compressai", "torchattacks"} <= no_deps
    assert not no_deps & set(core)
    assert no_deps <= set(extras["pinned"])


def test_no_cap_that_would_downgrade_colab():
    req = _requirements_txt()
    core, _ = _pyproject()
    for name in ("numpy", "torch", "torchvision"):
        for spec in (req[name][0].specifier, core[name].specifier):
            assert not any(s.operator in ("<", "<=", "==", "~=") for s in spec), f"{name} {spec} caps Colab's version"


def _constraints() -> dict[str, list[Requirement]]:
    """name -> its pins in constraints.txt (several where they differ per Python, each with its marker)."""
    pins: dict[str, list[Requirement]] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if spec:
            req = Requirement(spec)
            assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == "==", \
                f"constraints.txt: {spec!r} is not an exact pin"
            pins.setdefault(canonicalize_name(req.name), []).append(req)
    return pins


def _check_wheels():
    """.ci/check_wheels.py as a module (its PYTHONS: the versions CI resolves for)."""
    spec = importlib.util.spec_from_file_location("check_wheels", ROOT / ".ci" / "check_wheels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _environments(python: str) -> dict:
    """The marker environment of Python ``python`` ("3.11" is 3.11.0, as uv reads it)."""
    return {"python_version": ".".join(python.split(".")[:2]),
            "python_full_version": f"{python}.0" if python.count(".") == 1 else python}


def test_constraints_pin_every_requirement_exactly():
    """Every requirement has exactly one pin for each Python CI checks (and its marker boundaries), inside the
    requirement's bounds."""
    pins = _constraints()
    check_wheels = _check_wheels()
    for python in check_wheels.targets():
        env = _environments(python)
        for name, (r, _) in _requirements_txt().items():
            apply = [p for p in pins.get(name, []) if p.marker is None or p.marker.evaluate(env)]
            assert len(apply) == 1, f"{name}: {len(apply)} pins apply on Python {python} in constraints.txt"
            version = next(iter(apply[0].specifier)).version
            assert r.specifier.contains(version, prereleases=True), f"{name}=={version} violates {r.specifier}"


def test_the_pythons_of_the_readme_are_the_ones_ci_resolves_and_pyproject_allows():
    """The README's "Python X to Y" (and the book's intro and the Makefile's) = .ci/check_wheels.py's PYTHONS
    (consecutive minor versions) = pyproject's requires-python lower bound; .ci/run runs the check."""
    pythons = _check_wheels().PYTHONS
    minors = [int(v.split(".")[1]) for v in pythons]
    assert all(v.startswith("3.") for v in pythons) and minors == list(range(minors[0], minors[-1] + 1)), pythons
    named = f"Python {pythons[0]} to {pythons[-1]}"
    for doc in ("README.md", "book/intro.md", "Makefile"):
        text = (ROOT / doc).read_text()
        assert named in text, f"{doc} does not name {named}"
        assert not re.search(r"Python 3\.\d+\+", text), f"{doc} still names an open range (Python 3.x+)"
        stated = set(re.findall(r"Python (3\.\d+) to (3\.\d+)", text))
        assert stated == {(pythons[0], pythons[-1])}, f"{doc} names {stated}, CI checks {pythons}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert SpecifierSet(project["requires-python"]) == SpecifierSet(f">={pythons[0]}"), project["requires-python"]
    assert "python3 .ci/check_wheels.py" in (ROOT / ".ci" / "run").read_text()


def test_make_install_installs_the_no_deps_lines_without_their_dependencies():
    """The Makefile installs requirements.txt less its '# no-deps' lines, then those with --no-deps (as the
    Colab cell and CI's resolution check do)."""
    make = (ROOT / "Makefile").read_text()
    assert "grep -v '#[[:space:]]*no-deps' requirements.txt) -c constraints.txt" in make
    assert "pip install -q --no-deps $(foreach r,$(NO_DEPS),'$(r)') -c constraints.txt" in make
    deps, no_deps = _check_wheels().split_requirements()
    assert {canonicalize_name(Requirement(r).name) for r in no_deps} == {"compressai", "torchattacks"}
    assert not {canonicalize_name(Requirement(r).name) for r in deps} & {"compressai", "torchattacks"}


def test_ray_tune_imports_and_runs_two_trials(tmp_path):
    """`import ray.tune` fails when pyarrow refuses the installed numpy (pyarrow 26 with numpy 1.x)."""
    import ray
    from ray import tune

    def trainable(config):
        return {"score": config["x"] ** 2}

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        run_config = getattr(tune, "RunConfig", None) or ray.train.RunConfig
        results = tune.Tuner(
            trainable,
            param_space={"x": tune.grid_search([1, 2])},
            tune_config=tune.TuneConfig(metric="score", mode="max"),
            run_config=run_config(storage_path=str(tmp_path), verbose=0),
        ).fit()
    finally:
        if started:
            ray.shutdown()
    assert len(results) == 2 and not results.errors
    assert results.get_best_result().config["x"] == 2


@pytest.mark.parametrize("module", ["compressai", "torchattacks", "torch_pruning", "pyarrow", "pandas", "skimage", "plotly"])
def test_dependency_imports(module):
    __import__(module)
