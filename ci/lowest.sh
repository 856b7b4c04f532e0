#!/usr/bin/env bash
# The tests at the oldest versions pyproject.toml allows: a second venv (.venv-lowest) resolved under
# ci/lowest-constraints.txt (each pin is a lower bound of pyproject.toml), on the oldest Python that
# requires-python allows (3.10) where the machine has it. See docs/installation.md.
set -euo pipefail
cd "$(dirname "$0")/.."

python=''
for candidate in python3.10 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.10*/bin/python3; do
  if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
    python=$candidate
    break
  fi
done
if [ -z "$python" ]; then
  python=python3
  echo "ci/lowest.sh: no Python 3.10 here; the oldest versions on $($python --version)."
fi

rm -rf .venv-lowest
"$python" -m venv .venv-lowest
# uv resolves the pinned set in seconds (pip's resolver backtracks for many minutes on it).
.venv-lowest/bin/pip install -q uv
.venv-lowest/bin/uv pip install -q -p .venv-lowest/bin/python -c ci/lowest-constraints.txt -e '.[test]'
.venv-lowest/bin/python -c 'import sys, jax, flax, optax; print("lowest:", sys.version.split()[0], "jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__)'
echo "ci/lowest.sh: installed in ${SECONDS} s"
.venv-lowest/bin/python -m pytest -q -n 2 -p no:cacheprovider tests
echo "ci/lowest.sh: ${SECONDS} s in all"
