#!/usr/bin/env bash
# Make ~/farm-venv (or $1) with the cluster's Python, the same patch release on every node.
#
# Ray refuses a node or driver whose Python differs from the cluster's in the patch release, and
# the pins of constraints.txt (numpy, scipy, av, pillow, pyarrow) need Python 3.11 or newer,
# which the machine images' system Python (Ubuntu 22.04: 3.10) is not. So the environment's
# Python is fetched by uv (a pinned release of it, from PyPI) rather than taken from the image.
# cluster/Dockerfile starts from the same release; tests/test_cluster_configs.py holds them equal.
# Safe to run again: an environment that already has this Python is left as it is.
set -euo pipefail
PYTHON_VERSION=3.11.7
UV_VERSION=0.13.8
venv="${1:-$HOME/farm-venv}"

if "$venv/bin/python" -c "import platform, sys; sys.exit(platform.python_version() != '$PYTHON_VERSION')" 2>/dev/null; then
    exit 0
fi
tools="$HOME/.farm-uv"
if [ ! -x "$tools/bin/uv" ]; then
    python3 -m venv "$tools" 2>/dev/null \
        || { sudo apt-get update -q && sudo apt-get install -y -q python3-venv && python3 -m venv "$tools"; }
    "$tools/bin/pip" install -q "uv==$UV_VERSION"
fi
rm -rf "$venv"  # an environment of another Python (an older image's, say) cannot be upgraded in place
"$tools/bin/uv" venv --quiet --seed --python-preference only-managed --python "$PYTHON_VERSION" "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
