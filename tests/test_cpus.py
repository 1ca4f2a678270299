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


def test_threads_follow_the_other_programs_load(tmp_path):
    """Training keeps all usable CPUs alone and drops to what other programs leave (at least one) beside them;
    this process's own running threads are not counted as load."""
    f = tmp_path / "loadavg"
    usable = cpus.usable_cpus()
    f.write_text(f"0.5 0.5 0.5 {1}/80 123\n")  # only the reader runs
    assert cpus.threads_now(loadavg=f) == usable
    f.write_text(f"2.0 2.0 2.0 {1 + usable}/80 123\n")  # as many other runnable tasks as CPUs
    assert cpus.threads_now(loadavg=f) == 1
    f.write_text("1.0 1.0 1.0 2/80 123\n")
    assert cpus.other_runnable(loadavg=f, own=lambda: 2) == 0  # our two threads, nothing else
    assert cpus.other_runnable(loadavg=f, own=lambda: 1) == 1
    assert cpus.threads_now(loadavg=tmp_path / "missing") == usable
    assert cpus.threads_now(most=1, loadavg=f) == 1


def test_setup_makes_training_adapt_except_at_smoke():
    import robustnb

    robustnb.setup("cpu", verbose=False)
    assert cpus.adaptive()
    robustnb.setup("smoke", verbose=False)
    assert not cpus.adaptive()
