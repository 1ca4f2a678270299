"""Independent trainings as jobs (robustnb.jobs): on Ray, each after what it needs, back into the driver's cache."""

import functools
import pickle
import sys

import pytest
import torch
from torch import nn

from robustnb import jobs as J
from robustnb.cache import cached
from robustnb.config import ConfigError


def _build():
    return nn.Linear(2, 1)


def _train_toy(tag: float, base_tag: float | None = None) -> nn.Module:
    """A toy model through the model cache: weights ``tag``; its bias the sum of its base's weights."""
    def train(m):
        with torch.no_grad():
            m.weight.fill_(tag)
            m.bias.fill_(0.0 if base_tag is None else float(_train_toy(base_tag).weight.sum()))

    return cached("toy", {"kind": "toy", "tag": tag, "base": base_tag}, _build, train, verbose=False)


def toy_job(tag: float, base: J.ModelJob | None = None) -> J.ModelJob:
    base_tag = None if base is None else base.spec["tag"]
    return J.ModelJob("toy", {"kind": "toy", "tag": tag, "base": base_tag},
                      functools.partial(_train_toy, tag, base_tag), needs=() if base is None else (base,), cost=tag)


def _worker_cache() -> str:
    from robustnb.config import cache_dir

    return str(cache_dir())


def test_jobs_run_on_ray_after_what_they_need_and_come_back_to_the_driver(tmp_path, monkeypatch):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the toy jobs live in this test module
    monkeypatch.setenv("ROBUSTNB_CACHE", str(tmp_path / "driver"))
    base = toy_job(1.0)
    fine, other = toy_job(2.0, base), toy_job(3.0)
    assert J.run_jobs([fine, other], J.Execution("local")) == 0 and not fine.is_cached()  # local: trained on load
    try:
        assert J.run_jobs([fine, other], J.Execution("ray", num_cpus=2)) == 3  # the base came along
        # a local Ray's workers use the driver's cache: emptying it empties theirs (no stale second cache that
        # would make a run "from an empty cache" load models trained in an earlier run)
        assert ray.get(ray.remote(_worker_cache).remote()) == str(tmp_path / "driver")
    finally:
        J.ray_shutdown()
    assert base.is_cached() and fine.is_cached() and other.is_cached()
    model = _train_toy(2.0, 1.0)
    assert model.robustnb_info["from_cache"]
    assert float(model.weight.detach()[0, 0]) == 2.0 and float(model.bias.detach()) == 2.0  # base weights: 1 + 1
    assert J.run_jobs([fine], J.Execution("ray")) == 0  # all cached: nothing starts


def test_jobs_are_keyed_by_their_spec_and_backends_are_checked():
    assert toy_job(1.0).key == toy_job(1.0).key != toy_job(2.0).key
    with pytest.raises(ConfigError, match="Unknown backend 'spark'"):
        J.Execution("spark")


def test_split_model_jobs_share_their_base_and_match_the_models_the_chapters_load():
    """Each lambda's fine-tune needs the base of its (architecture, entropy model); the jobs' cache entries are
    the ones get_split_model reads (the same recipe)."""
    import robustnb
    from robustnb.split import zoo

    run = robustnb.setup("smoke", verbose=False)
    jobs = zoo.split_jobs(("vgg",), ("factorized",), (0.01, 0.04), run)
    assert len(jobs) == 2 and jobs[0].key != jobs[1].key
    assert [j.needs[0].key for j in jobs] == [jobs[0].needs[0].key] * 2 and jobs[0].needs[0].spec["kind"] == "split-base"
    r = zoo._Recipe.of("vgg", "factorized", 0.04, "smoke", run.seed)
    assert (jobs[1].name, jobs[1].spec) == r.name_spec
    # a job travels to a Ray worker without the training images: the worker selects them again from its disk
    blob = pickle.dumps(jobs[1].train)
    assert len(blob) < 100_000, len(blob)
    back = pickle.loads(pickle.dumps(r))
    assert back.name_spec == r.name_spec and torch.equal(back.train_set.labels, r.train_set.labels)


def test_a_run_trains_its_jobs_on_ray_on_the_cpu_at_cpu_and_full_only():
    """smoke stays in-process (its checked outputs must not depend on Ray), a GPU run keeps its trainings on the
    GPU in this process, the cpu and full presets on the CPU send them to Ray; an explicit backend wins."""
    from robustnb.config import Run

    def run(preset, device="cpu"):
        return Run(preset=preset, seed=0, device=torch.device(device))

    assert J.Execution.for_run(run("smoke")).backend == "local"
    assert J.Execution.for_run(run("cpu")).backend == "ray"
    assert J.Execution.for_run(run("full")).backend == "ray"
    assert J.Execution.for_run(run("cpu", "cuda")).backend == "local"
    assert J.Execution.for_run(run("cpu"), "local").backend == "local"
    assert J.Execution.for_run(run("smoke"), "ray", "ray://head:10001").address == "ray://head:10001"
    with pytest.raises(ConfigError, match="Unknown backend 'spark'"):
        J.Execution.for_run(run("cpu"), "spark")


class _FakeRay:
    def __init__(self, up):
        self.up, self.shutdowns = up, 0

    def is_initialized(self):
        return self.up

    def shutdown(self):
        self.up, self.shutdowns = False, self.shutdowns + 1


@pytest.mark.parametrize("running_before", [False, True])
def test_a_ray_session_stops_only_the_ray_it_started(monkeypatch, running_before):
    fake = _FakeRay(running_before)
    monkeypatch.setitem(sys.modules, "ray", fake)
    with J.ray_session(J.Execution("ray")):
        fake.up = True  # run_jobs started (or found) Ray
    assert fake.shutdowns == (0 if running_before else 1)
    with J.ray_session(J.Execution("local")):
        pass
    assert fake.shutdowns == (0 if running_before else 1)


def test_split_models_of_a_cpu_run_train_as_ray_jobs_by_default(monkeypatch):
    """load_split_models hands the models of a cpu run on the CPU to Ray (run_jobs) before loading them."""
    from robustnb.config import Run
    from robustnb.split import zoo

    seen = []

    def fake_run_jobs(jobs, ex, desc=""):
        seen.append((len(jobs), ex.backend))
        raise RuntimeError("stop here")

    def fake_split_jobs(archs, entropy_models, lambdas, run):  # no data needed: one stand-in per model
        return [(a, em, lam) for a in archs for em in entropy_models for lam in lambdas]

    monkeypatch.setattr(zoo, "run_jobs", fake_run_jobs)
    monkeypatch.setattr(zoo, "split_jobs", fake_split_jobs)
    with pytest.raises(RuntimeError, match="stop here"):
        zoo.load_split_models(("resnet",), ("factorized", "hyperprior"), (0.01, 0.04),
                              Run(preset="cpu", seed=0, device=torch.device("cpu")))
    assert seen == [(4, "ray")]
