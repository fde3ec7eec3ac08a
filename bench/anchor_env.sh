#!/usr/bin/env bash
# Shared set-up for the benchmarks that run the Python reference side by side:
# a venv with the reference's pinned packages (reused when present) and a
# writable copy of ../shared/anchors/keras_seed. Sourced, not run.
ANCHOR_VENV=${ANCHOR_VENV:-/tmp/anchorenv}
SHARED=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../shared" && pwd)
export BCCD_DIR="$SHARED/data/bccd"

anchor_setup() {  # $1: "cv" (OpenCV + NumPy) or "tf" (everything)
  if [ ! -x "$ANCHOR_VENV/bin/python" ]; then
    python3 -m venv "$ANCHOR_VENV"
  fi
  local req
  if [ "$1" = tf ]; then
    req=$(grep -v '^#' "$SHARED/anchors/keras_seed/requirements.txt" | grep -v 'not used' | grep -v matplotlib | sed 's/#.*//')
  else
    req=$(grep -E '^(opencv|numpy)' "$SHARED/anchors/keras_seed/requirements.txt" | sed 's/#.*//')
  fi
  # shellcheck disable=SC2086
  "$ANCHOR_VENV/bin/pip" install -q $req
  ANCHOR_DIR=$(mktemp -d)
  cp -r "$SHARED/anchors/keras_seed/." "$ANCHOR_DIR/"
  PY="$ANCHOR_VENV/bin/python"
}
