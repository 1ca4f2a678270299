"""The OpenMP set-up robustnb makes before torch loads (robustnb.cpus): passive waiting, the usable CPUs."""

import os
import subprocess
import sys

from robustnb import cpus


def test_quota_caps_the_usable_cpus(tmp_path):
    f = tmp_path / "cpu.max"
    f.write_text("150000 100000\n")  # 1.5 CPUs -> 2
    assert cpus.usable_cpus(f) == min(2, len(os.sched_getaffinity(0)))
    f.write_text("50000 100000\n")
    assert cpus.usable_cpus(f) == 1
    f.write_text("max 100000\n")
    assert cpus.usable_cpus(f) == len(os.sched_getaffinity(0))
    assert cpus.usable_cpus(tmp_path / "missing") == len(os.sched_getaffinity(0))


def test_prepare_keeps_what_the_user_set():
    env = {"OMP_NUM_THREADS": "3"}
    done = cpus.prepare(env, modules={})
    assert env == {"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "PASSIVE"} and done == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert cpus.prepare({"OMP_WAIT_POLICY": "active", "OMP_NUM_THREADS": "1"}, modules={}) == {}
    assert cpus.worker_env(1) == {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def _fresh(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in cpus.MANAGED}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def test_importing_robustnb_first_sets_openmp_before_torch_loads():
    out = _fresh("import os, robustnb, torch; from robustnb import cpus\n"
                 "print(os.environ['OMP_WAIT_POLICY'], torch.get_num_threads() == cpus.usable_cpus(), "
                 "repr(cpus.late_note()))")
    assert out.split() == ["PASSIVE", "True", "''"]


def test_torch_first_is_reported():
    out = _fresh("import torch, robustnb; from robustnb import cpus; print(cpus.late_note())")
    assert "torch was imported before robustnb" in out and "OMP_WAIT_POLICY=PASSIVE" in out
