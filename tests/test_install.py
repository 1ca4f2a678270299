"""The install story (issue 14): what requirements.txt, pyproject.toml and constraints.txt promise, and that
Ray Tune imports and runs in the environment the tests run in (CI's pinned job and its loose job alike).

A Colab runtime ships numpy 2; compressai declares numpy<2 and torchattacks requests~=2.25.1, so both are kept
out of the package's core dependencies and installed with ``--no-deps`` there (see requirements.txt).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
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


def test_constraints_pin_every_requirement_exactly():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if spec:
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", spec)
            assert m, f"constraints.txt: {spec!r} is not an exact pin"
            pins[canonicalize_name(m[1])] = m[2]
    for name, (r, _) in _requirements_txt().items():
        assert name in pins, f"{name} is not pinned in constraints.txt"
        assert r.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} violates {r.specifier}"


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
