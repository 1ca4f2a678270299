"""Nothing that reaches the rANS coder can hang it: a NaN pixel, or a model whose weights make the latent
non-finite, is refused before CompressAI's coder runs (whose escape coding of a NaN cast to an integer never
ended: a reader's kernel needed a restart).

The calls run in a child process with a deadline, so a regression fails this test instead of hanging CI; inside
it each call is timed and must raise the package's error within a fraction of a second."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 240  # the whole child process (imports, two small models); a hang is killed here
PER_CALL_S = 0.5  # each refused call

CHILD = textwrap.dedent("""
    import json, sys, time
    import torch
    from robustnb.config import ConfigError
    from robustnb.split import build_split_model, rate

    results = []

    def timed(case, fn):
        t0 = time.perf_counter()
        try:
            fn()
            outcome = "returned"
        except ConfigError as e:
            outcome = "ConfigError: " + str(e)
        except Exception as e:
            outcome = type(e).__name__ + ": " + str(e)
        results.append({"case": case, "seconds": time.perf_counter() - t0, "outcome": outcome})
        print(json.dumps(results[-1]), flush=True)

    for em in ("factorized", "hyperprior"):
        torch.manual_seed(0)
        model = build_split_model("vgg", em).eval()
        model.update(force=True)
        x = torch.rand(2, 3, 32, 32)
        x[1, 0, 5, 7] = float("nan")  # one NaN pixel
        timed(f"{em} compress, one NaN pixel", lambda: model.compress(x))
        timed(f"{em} decode_agreement, one NaN pixel", lambda: rate.decode_agreement(model, x))
        timed(f"{em} real_bytes, one NaN pixel", lambda: rate.real_bytes(model, x))
        with torch.no_grad():  # finite images, non-finite weights: the latent itself is NaN
            model.g_a[-1].bias[0] = float("nan")
        clean = torch.rand(2, 3, 32, 32)
        timed(f"{em} compress, NaN latent", lambda: model.compress(clean))
        timed(f"{em} decode_agreement, NaN latent", lambda: rate.decode_agreement(model, clean))
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump(results, f)
""")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("coder") / "results.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(out)], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=DEADLINE_S)
    except subprocess.TimeoutExpired as e:
        done = (e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout or "").strip()
        pytest.fail(f"the coder hung: no answer after {DEADLINE_S} s. Calls that did return:\n{done or '(none)'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {r["case"]: r for r in json.loads(out.read_text())}


@pytest.mark.parametrize("em", ["factorized", "hyperprior"])
@pytest.mark.parametrize("call", ["compress", "decode_agreement", "real_bytes"])
def test_a_nan_pixel_is_refused_at_once(results, em, call):
    r = results[f"{em} {call}, one NaN pixel"]
    assert r["outcome"].startswith("ConfigError") and "NaN" in r["outcome"] and "[0, 1]" in r["outcome"], r
    assert r["seconds"] < PER_CALL_S, r


@pytest.mark.parametrize("em", ["factorized", "hyperprior"])
@pytest.mark.parametrize("call", ["compress", "decode_agreement"])
def test_a_non_finite_latent_never_reaches_the_coder(results, em, call):
    r = results[f"{em} {call}, NaN latent"]
    assert r["outcome"].startswith("ConfigError") and "non-finite" in r["outcome"] and "rANS" in r["outcome"], r
    assert r["seconds"] < PER_CALL_S, r
