"""Runtime benchmark: ``python -m robustnb.bench --preset cpu`` runs every chapter and prints a table.

Each chapter runs under papermill in a fresh kernel with ``preset`` injected; the table gives wall time,
the longest cell (which the book build's per-cell timeout must clear) and the kernel's peak resident memory. ``--fresh-cache`` points ROBUSTNB_CACHE at an empty temporary
folder, so the times include training (a "cold" first run); without it, models already in the cache
are reused (a "warm" rerun). Executed notebooks go to a temporary folder: nothing in the book is
overwritten. The runtime box at the top of each chapter quotes these measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import papermill as pm
import torch

from robustnb import cpus, data
from robustnb.book import ROOT, chapters, runtimes, sync
from robustnb.config import Run, resolve_preset
from robustnb.models import for_dataset
from robustnb.registry import ENTROPY_MODELS
from robustnb.split import LAMBDAS, build_split_model, get_split_model, rate
from robustnb.split.rate import rate_bpp
from robustnb.train import TrainConfig, accuracy, fit


def _run_one(notebook: str, preset: str, out: str) -> None:
    """Child process: execute one chapter, print wall time and the kernel's peak RSS as JSON."""

    t0 = time.perf_counter()
    error = ""
    try:
        pm.execute_notebook(notebook, out, parameters={"preset": preset}, kernel_name="python3",
                            cwd=str(Path(notebook).parent), progress_bar=False, log_output=False)
    except Exception as e:  # report, do not hide
        error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kernel (a child), in KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_mb": peak_kb / 1024, "error": error,
                      "longest_cell_s": longest_cell(out)}))


def longest_cell(executed: str) -> float:
    """The longest cell of an executed notebook, in seconds (papermill's per-cell ``duration``); NaN if none."""
    try:
        cells = json.loads(Path(executed).read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return float("nan")
    times = [c.get("metadata", {}).get("papermill", {}).get("duration") for c in cells]
    times = [t for t in times if isinstance(t, (int, float))]
    return max(times) if times else float("nan")


def bench(preset: str, names: list[str] | None = None, fresh_cache: bool = False) -> pd.DataFrame:
    preset = resolve_preset(preset)
    paths = chapters()
    if names:
        unknown = sorted(set(names) - {p.stem for p in paths})
        if unknown:
            raise SystemExit(f"unknown chapter(s) {unknown}: choose from {[p.stem for p in paths]}")
        paths = [p for p in paths if p.stem in names]
    env = dict(os.environ, ROBUSTNB_PRESET=preset)
    tmp = tempfile.mkdtemp(prefix="robustnb-bench-")
    if fresh_cache:
        env["ROBUSTNB_CACHE"] = str(Path(tmp) / "cache")
    print(f"  executed notebooks: {tmp}", flush=True)
    rows = []
    for p in paths:
        out = str(Path(tmp) / p.name)
        res = runtimes.measure(p, preset, out, env=env)
        rows.append({"chapter": p.stem, "preset": preset, "cache": "cold" if fresh_cache else "warm",
                     "wall_s": round(res["seconds"], 1), "peak_mem_mb": round(res["peak_mb"], 0),
                     "longest_cell_s": round(res.get("longest_cell_s", float("nan")), 1),
                     "status": "ok" if not res.get("error") else res["error"][-300:]})
        print(f"  {p.stem}: {rows[-1]['wall_s']} s (longest cell {rows[-1]['longest_cell_s']} s), "
              f"{rows[-1]['peak_mem_mb']} MB, {rows[-1]['status']}", flush=True)
    return pd.DataFrame(rows)


def save_runtimes(df: pd.DataFrame, preset: str, path: Path = runtimes.PATH, how: str | None = None) -> Path:
    """Record each chapter's measured cold wall time and peak memory in ``book/runtimes.json``, which the runtime
    boxes, the introduction's table and ``make book``'s progress line are rendered from (``how``: how they were
    taken, shown in each box)."""
    ok = df[df["status"] == "ok"]
    return runtimes.save(((r.chapter, r.wall_s, r.peak_mem_mb, getattr(r, "longest_cell_s", float("nan")))
                          for r in ok.itertuples()), preset, path, how)


SPEED_SETTINGS = (("fp32", False), ("fp32", True), ("bf16", True))


def training_speed(model: str = "cnn", n_train: int = 4096, epochs: int = 2, n_test: int = 2000, seed: int = 0,
                   settings=SPEED_SETTINGS) -> pd.DataFrame:
    """Throughput of the training loop and the accuracy it buys, per speed setting (``precision``,
    ``channels_last``), same model, data, seed and recipe: one row per setting with images/s (the last
    epoch), the final training loss and the test accuracy. ``model``: a classifier name (``cnn``, ``resnet18``
    ...) or ``split-<arch>-<entropy model>`` (trained with the rate term at the smallest lambda, as the zoo)."""
    train_set = data.load_cifar10("train").subset(n_train, seed)
    test_set = data.load_cifar10("test").subset(n_test, seed)
    rows = []
    for precision, channels_last in settings:
        cfg = TrainConfig(epochs=epochs, optimizer="adam", lr=2e-3, weight_decay=0.0, scheduler="onecycle",
                          seed=seed, precision=precision, channels_last=channels_last)
        torch.manual_seed(seed)
        if model.startswith("split-"):
            _, arch, em = model.split("-")
            m, terms = build_split_model(arch, em, train_set), {"rate": (min(LAMBDAS), rate_bpp)}
        else:
            m, terms = for_dataset(model, train_set), None
        hist = fit(m, train_set, cfg, extra_terms=terms, desc=f"{model} {precision} channels_last={channels_last}")
        last = hist.iloc[-1]
        rows.append({"model": model, "precision": precision, "channels_last": channels_last,
                     "images_per_s": n_train / last["seconds"], "train_loss": last["ce"],
                     "test_acc": accuracy(m, test_set), "n_train": n_train, "epochs": epochs,
                     "threads": torch.get_num_threads()})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------- coding
def coding(archs=("vgg",), preset: str = "smoke", n_images: int = 256, seed: int = 0) -> pd.DataFrame:
    """Real rANS bytes vs the estimate, time per image (:func:`robustnb.split.rate.coding_speed`): one row per
    split model ``(arch, entropy model)`` of the zoo at ``preset`` (the smallest lambda; trained on first use,
    then cached) on ``n_images`` CIFAR-10 test images, with CompressAI's own per-image ``compress`` beside it."""
    run = Run(preset=resolve_preset(preset), seed=seed, device=torch.device("cpu"))
    x, _ = data.load_cifar10("test").subset(n_images, seed).tensors()
    rows = []
    for arch in archs:
        for em in ENTROPY_MODELS.names():
            m = get_split_model(arch, em, min(LAMBDAS), run, verbose=False)
            rows.append({"model": f"split-{arch}-{em}", "preset": run.preset, **rate.coding_speed(m, x)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------- contention
_CHILD = ("import json, sys{first}\nfrom robustnb import cpus\ncpus.set_adaptive({adaptive})\n"
          "from robustnb.bench import training_speed\n"
          "df = training_speed({model!r}, n_train={n}, epochs=2, n_test=200, settings=(('bf16', True),))\n"
          "print(json.dumps({{'images_per_s': float(df.images_per_s.iloc[0]), 'threads': int(df.threads.iloc[0])}}))")


#: (name, code run before robustnb is imported, environment) of each set-up the contention benchmark compares
SETUPS = (("robustnb (passive wait, adaptive threads)", "", {}, True),
          ("passive wait, fixed threads", "", {}, False),
          ("torch defaults", "\nimport torch", {}, False),
          ("passive wait, 1 thread", "", {"OMP_NUM_THREADS": "1"}, False))


def _spinners(n: int) -> list[subprocess.Popen]:
    """``n`` processes that keep one core busy each: the competing CPU load."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def contention(models=("cnn", "split-resnet-hyperprior"), n_train: int = 4096, load_threads: int = 2) -> pd.DataFrame:
    """Training throughput alone and beside a competing ``load_threads``-thread CPU load, for each of
    :data:`SETUPS`: robustnb's set-up (:mod:`robustnb.cpus`: passive OpenMP waiting, threads adapted to the load
    as at ``cpu``), the same with a fixed thread count, torch's defaults (torch imported first) and one thread.

    Each measurement is a fresh process (OpenMP reads its settings when torch loads), bfloat16 + channels-last as
    at ``cpu``, images/s of the second of two epochs; ``slowdown`` = alone / loaded."""
    env = {k: v for k, v in os.environ.items() if k not in cpus.MANAGED}  # as a new shell would start
    rows = []
    for model in models:
        for setup, first, extra, adapt in SETUPS:
            speed = {}
            for loaded in (False, True):
                load = _spinners(load_threads) if loaded else []
                try:
                    out = subprocess.run([sys.executable, "-c", _CHILD.format(first=first, model=model, n=n_train, adaptive=adapt)],
                                         env={**env, **extra}, capture_output=True, text=True, check=True).stdout
                finally:
                    for p in load:
                        p.kill()
                speed[loaded] = json.loads(out.strip().splitlines()[-1])
            rows.append({"model": model, "setup": setup, "threads": speed[False]["threads"],
                         "alone_img_s": speed[False]["images_per_s"], "loaded_img_s": speed[True]["images_per_s"],
                         "slowdown": speed[False]["images_per_s"] / speed[True]["images_per_s"]})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m robustnb.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default=None, help="smoke | cpu | full (default: $ROBUSTNB_PRESET or cpu)")
    ap.add_argument("--chapters", nargs="*", help="chapter file stems (default: every chapter in _toc.yml)")
    ap.add_argument("--fresh-cache", action="store_true", help="train everything again in an empty cache")
    ap.add_argument("--speed", nargs="*", metavar="MODEL",
                    help="instead: training throughput and accuracy per speed setting (fp32, channels_last, "
                         "bf16) for these models (default: cnn split-resnet-hyperprior)")
    ap.add_argument("--contention", action="store_true",
                    help="instead: training images/s alone and beside a 2-thread CPU load (robustnb's OpenMP set-up "
                         "vs torch's defaults)")
    ap.add_argument("--coding", nargs="*", metavar="ARCH",
                    help="instead: milliseconds per image of real rANS bytes vs the estimate (and CompressAI's own "
                         "compress) for the split models of these architectures (default: vgg), both entropy "
                         "models, at --preset (default here: smoke)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        _run_one(args.one, args.preset, args.out)
        return 0
    if args.contention:
        print(contention().round(2).to_markdown(index=False))
        return 0
    if args.coding is not None:
        df = coding(tuple(args.coding or ["vgg"]), args.preset or "smoke")
        print(df.round(3).to_markdown(index=False))
        return 0 if df["identical"].all() else 1
    if args.speed is not None:
        frames = [training_speed(m) for m in (args.speed or ["cnn", "split-resnet-hyperprior"])]
        print(pd.concat(frames, ignore_index=True).round(3).to_markdown(index=False))
        return 0
    preset = resolve_preset(args.preset)
    print(f"robustnb.bench: preset={preset}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"cuda={'yes: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no'}, "
          f"{platform.processor() or platform.machine()}")
    df = bench(preset, args.chapters, args.fresh_cache)
    print(df.to_markdown(index=False))
    if args.fresh_cache:
        how = (f"`python -m robustnb.bench --preset {preset} --fresh-cache` on {time.strftime('%Y-%m-%d')}, the chapters "
               f"{' '.join(args.chapters) if args.chapters else 'in book order'} from an empty cache")
        print("  measured times:", save_runtimes(df, preset, how=how).relative_to(ROOT))
        print("  runtime boxes updated:", ", ".join(str(p.relative_to(ROOT)) for p in sync()) or "none")
    return 0 if (df["status"] == "ok").all() else 1


if __name__ == "__main__":
    sys.exit(main())
