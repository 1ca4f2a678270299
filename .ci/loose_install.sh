#!/usr/bin/env bash
# CI's second job: install WITHOUT constraints.txt, the way readers do, so that a new release of a dependency
# breaks CI before it breaks a reader. Two installs into one fresh venv (.venv-loose), each then tested:
#   1. Colab's way (numpy 2): the package with its loose dependencies from pyproject.toml, then the
#      requirements.txt lines marked "# no-deps" (compressai, torchattacks) with --no-deps, since their metadata
#      would downgrade numpy (and requests). Unit tests and one chapter (papermill, smoke preset).
#   2. A laptop's way: `pip install -r requirements.txt` alone, in place (compressai's pin brings numpy 1.x
#      back, so pyarrow<26 matters there). The unit tests that touch what changes with numpy 1.x (imports and a
#      Ray Tune run, the compressai coder, Ray, data); the pinned job runs all of them on numpy 1.x already.
# Uses pip's download cache (no --no-cache-dir). Run from anywhere; ROBUSTNB_DATA must point at the data.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LOOSE_VENV:-.venv-loose}"
PYTHON="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
# Its own model cache: models pickled under the pinned job's numpy 1.26 must not stand in for a numpy 2 run.
export ROBUSTNB_CACHE="${ROBUSTNB_LOOSE_CACHE:-$PWD/.cache/robustnb-loose}"
unset PLOTLY_RENDERER   # a reader's environment: the package must pick its own renderer
start=$(date +%s)
stamp() { echo "--- loose install: $* ($(( $(date +%s) - start )) s)"; }

rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
export PATH="$PWD/$VENV/bin:$PATH"   # papermill, jupyter and the python3 kernel come from this venv
py="$PWD/$VENV/bin/python"
"$py" -m pip install -q --upgrade pip

versions() {
  "$py" - <<'EOF'
import importlib.metadata as m
names = "torch torchvision numpy pyarrow ray compressai torchattacks torch-pruning pandas scipy scikit-image plotly requests"
print("versions:", ", ".join(f"{n} {m.version(n)}" for n in names.split()))
EOF
}

unit_tests() {  # [test paths]: default all of tests/
  # pytest's own exit code fails the job, 5 ("no tests ran") included.
  rc=0
  "$py" -m pytest "${@:-tests}" -q -m "not chapters and not book" -p no:cacheprovider --durations=10 || rc=$?
  if [ "$rc" -eq 5 ]; then echo "loose install: pytest collected no tests" >&2; fi
  if [ "$rc" -ne 0 ]; then exit "$rc"; fi
}

# 1. Colab's way
no_deps=$(grep -E '#[[:space:]]*no-deps' requirements.txt | sed 's/#.*//; s/[[:space:]]//g')
[ -n "$no_deps" ] || { echo "requirements.txt marks no '# no-deps' line" >&2; exit 1; }
stamp "pip install -e .[book], then --no-deps:" $no_deps
"$py" -m pip install -q -e ".[book]"
# shellcheck disable=SC2086
"$py" -m pip install -q --no-deps $no_deps
versions
"$py" -c "import numpy, sys; sys.exit(0 if int(numpy.__version__.split('.')[0]) >= 2 else 'numpy 2 expected in the Colab-style install, got ' + numpy.__version__)"
stamp "unit tests (numpy 2)"
unit_tests
stamp "chapter getting_started at the smoke preset (numpy 2)"
out="$(mktemp -d)"
papermill book/getting_started.ipynb "$out/getting_started.ipynb" -p preset smoke -k python3 --log-level WARNING
rm -rf "$out"

# 2. A laptop's way
stamp "pip install -r requirements.txt (no constraints)"
"$py" -m pip install -q -r requirements.txt
versions
stamp "unit tests touched by numpy 1.x (plain requirements.txt)"
unit_tests tests/test_install.py tests/test_split_model.py tests/test_distributed.py tests/test_data.py
stamp "done"
