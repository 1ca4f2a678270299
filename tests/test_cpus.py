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


def test_native_bf16_reads_the_cpu_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    assert cpus.native_bf16(info, "linux")
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n")  # AVX-512 without BF16
    assert not cpus.native_bf16(info, "linux")
    info.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")  # aarch64
    assert cpus.native_bf16(info, "linux")
    assert not cpus.native_bf16(tmp_path / "missing", "linux")


def test_the_cpu_preset_trains_in_bf16_only_where_the_cpu_has_it(monkeypatch):
    """bf16 autocast on a CPU without native bf16 is emulated (slower than float32): float32 there, and the
    run line says which."""
    from robustnb import config, train

    for native, precision in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(cpus, "native_bf16", lambda native=native: native)
        assert config.training_precision("cpu") == precision
        assert train.TrainConfig(**train.speed_options("cpu")).precision == precision
        assert train.speed_options("cpu")["channels_last"] is True
        assert config.training_precision("smoke") == "fp32" and train.speed_options("smoke") == {}
        line = str(config.Run("cpu", 0, config.get_device("cpu")))
        assert f"training in {precision}" in line
