#!/usr/bin/env bash
# labgrade on Gradescope: run once, as root, when Gradescope builds the autograder image
# (this zip's contents are in /autograder/source). Made by `labgrade gradescope`.
#
#  1. gcc, make, libc headers and Python >= 3.11 from apt, only what is missing
#     (Ubuntu 22.04's python3 is 3.10: then python3.11 is installed beside it);
#  2. a virtual environment /opt/labgrade/venv that sees the system's packages, with the
#     grader's dependencies (already installed ones are kept; the others come from
#     labgrade/wheels/ in this zip or from PyPI) and the grader itself from its wheel;
#     without venv support, the same into that Python's own site-packages;
#  3. the reference server and hidden checks in this zip become readable by root only
#     (the grader runs as root; student code runs as an unprivileged uid).
set -euo pipefail

SRC=/autograder/source
HERE=$SRC/labgrade
VENV=/opt/labgrade/venv
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore

log() { printf 'labgrade setup: %s\n' "$*"; }

apt_updated=0
apt_install() {
    if [[ $apt_updated == 0 ]]; then
        apt-get update -qq || log "apt-get update failed"
        apt_updated=1
    fi
    apt-get install -y -qq --no-install-recommends "$@"
}

py_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }
find_python() {
    local py
    for py in python3 python3.13 python3.12 python3.11; do
        if command -v "$py" >/dev/null 2>&1 && py_ok "$py"; then command -v "$py"; return 0; fi
    done
    return 1
}

# --- 1. system packages: only what is missing -------------------------------------
missing=()
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
command -v make >/dev/null 2>&1 || missing+=(make)
[[ -e /usr/include/stdio.h ]] || missing+=(libc6-dev)
command -v setarch >/dev/null 2>&1 || missing+=(util-linux)
PY=$(find_python) || missing+=(python3 python3-venv python3-pip)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt_install "${missing[@]}"
fi
if ! PY=$(find_python); then
    log "python3 is older than 3.11: installing python3.11"
    apt_install python3.11 python3.11-venv || true
    PY=$(find_python) || { log "no Python >= 3.11: choose the base image Ubuntu 22.04 or newer"; exit 1; }
fi
log "Python: $PY ($("$PY" -V 2>&1))"

# --- 2. the grader ------------------------------------------------------------------
mkdir -p "$(dirname "$VENV")"
make_venv() { rm -rf "$VENV"; "$PY" -m venv --system-site-packages "$VENV" >/dev/null 2>&1; }
if make_venv || { apt_install python3-venv "$(basename "$PY")-venv" >/dev/null 2>&1 && make_venv; }; then
    RUN_PY=$VENV/bin/python
    PIP=("$RUN_PY" -m pip install)
else
    rm -rf "$VENV"
    log "no venv support: installing into $PY's own site-packages"
    RUN_PY=$PY
    if ! "$PY" -m pip --version >/dev/null 2>&1; then apt_install python3-pip; fi
    PIP=("$PY" -m pip install)
    if "$PY" -m pip install --help 2>/dev/null | grep -q -- --break-system-packages; then
        PIP+=(--break-system-packages)
    fi
fi
# dependencies: what is installed already stays (no network needed then)
"${PIP[@]}" --find-links "$HERE/wheels" -r "$HERE/requirements.txt"
# the grader itself, from this zip (--no-deps: the Docker SDK is not needed here)
"${PIP[@]}" --no-deps --no-index --force-reinstall "$HERE"/wheels/labgrade-*.whl
"$RUN_PY" -c 'import grader, grader.checks, pytest_jsonreport, pexpect, psutil, rich'
echo "$RUN_PY" >"$HERE/python"

# --- 3. root only: the reference and the hidden checks ----------------------------------
chown -R root:root "$SRC"
chmod -R go-rwx "$SRC"
if [[ -f $SRC/run_autograder ]]; then
    chmod 0700 "$SRC/run_autograder"
    if [[ -d /autograder && ! -e /autograder/run_autograder ]]; then cp "$SRC/run_autograder" /autograder/run_autograder; fi
    if [[ -e /autograder/run_autograder ]]; then chmod 0700 /autograder/run_autograder; fi
fi
log "ready: $("$RUN_PY" -c 'import grader; print("labgrade", grader.__version__)')"
