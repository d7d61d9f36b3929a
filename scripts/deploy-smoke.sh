#!/usr/bin/env bash
# `make deploy-smoke` (CI runs it after `make test`, see .ci/run): the container tools, every image, the
# smoke-test stand-ins, then the chart's workloads under podman with the loop driven through them
# (python -m deploy_smoke). Each stage has a time limit, so a stuck build or pod cannot hang CI; network
# steps are retried inside scripts/images.sh and scripts/install-system-deps.sh; containers, the network
# and host folders are removed at the end whatever happened; a timing summary is printed last.
#
#   scripts/deploy-smoke.sh [deploy_smoke options, e.g. --keep]
# Limits (seconds): DICOMLAB_SMOKE_LIMIT_DEPS (600), _IMAGES (1800), _STANDINS (900), _RUN (1200), and the
# whole run's DICOMLAB_SMOKE_LIMIT_TOTAL (2700: CI's hour minus `make test`'s 8-12 min, with room).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
PY=${VENV:-.venv}/bin/python
STAGES=()
RESULT=0
START=$SECONDS
TOTAL_LIMIT=${DICOMLAB_SMOKE_LIMIT_TOTAL:-2700}

summary() {
  local line
  printf '\n[deploy-smoke] timing summary\n'
  for line in "${STAGES[@]}"; do printf '  %s\n' "$line"; done
  if [ -s build/image-times.txt ]; then
    printf '  built (size, time):\n'; sed 's/^/    /' build/image-times.txt
  fi
  printf '  %-28s %5d s\n' "total" $((SECONDS - START))
  # Whatever the stages left (a killed run cannot clean up itself): containers, network, host folders.
  PYTHONPATH=scripts "$PY" -m deploy_smoke --cleanup >/dev/null 2>&1 || true
  if [ "$RESULT" -eq 0 ]; then echo "[deploy-smoke] PASSED"; else echo "[deploy-smoke] FAILED (see the stage above)"; fi
}
CHILD=""
trap summary EXIT
# Stopped from outside (CI's own limit, Ctrl-C): the running stage gets the signal too (timeout passes it on
# to its command: python -m deploy_smoke then removes its containers), then the summary runs.
trap '[ -n "$CHILD" ] && kill -TERM "$CHILD" 2>/dev/null; wait "$CHILD" 2>/dev/null; RESULT=130; exit 130' INT TERM

# stage NAME LIMIT COMMAND...: run under a time limit (TERM, then KILL 60 s later), record its time. The
# limit is cut to what is left of the whole run's (DICOMLAB_SMOKE_LIMIT_TOTAL).
stage() {
  local name=$1 limit=$2; shift 2
  local begin=$SECONDS code=0 left=$((TOTAL_LIMIT - (SECONDS - START)))
  [ "$left" -lt "$limit" ] && limit=$left
  [ "$limit" -gt 0 ] || limit=1
  echo "[deploy-smoke] == $name (limit ${limit} s)"
  timeout --kill-after=60 "$limit" "$@" &
  CHILD=$!
  wait "$CHILD" || code=$?
  CHILD=""
  local took=$((SECONDS - begin)) status=ok
  if [ "$code" -eq 124 ] || [ "$code" -eq 137 ]; then status="TIMED OUT after ${limit} s"
  elif [ "$code" -ne 0 ]; then status="FAILED (exit $code)"; fi
  STAGES+=("$(printf '%-28s %5d s  %s' "$name" "$took" "$status")")
  if [ "$code" -ne 0 ]; then RESULT=$code; echo "[deploy-smoke] $name: $status" >&2; exit "$code"; fi
}

mkdir -p build && rm -f build/image-times.txt
[ -x "$PY" ] || { echo "[deploy-smoke] no $PY: run 'make venv' first" >&2; RESULT=1; exit 1; }
stage "container tools" "${DICOMLAB_SMOKE_LIMIT_DEPS:-600}" scripts/install-system-deps.sh --containers
stage "images" "${DICOMLAB_SMOKE_LIMIT_IMAGES:-1800}" scripts/images.sh
stage "stand-ins (s3, orthanc, pg)" "${DICOMLAB_SMOKE_LIMIT_STANDINS:-900}" scripts/images.sh s3 orthanc postgresql
stage "chart workloads + loop" "${DICOMLAB_SMOKE_LIMIT_RUN:-1200}" env PYTHONPATH=scripts "$PY" -m deploy_smoke "$@"
