#!/usr/bin/env bash
# `make images`: build dicomlab's container images with podman from docker/*.Dockerfile.
#
#   scripts/images.sh [proxy|manifest|labeling|training|s3|orthanc|postgresql ...]   (default: the four images)
#
# Base images (DICOMLAB_BASE):
#   upstream  the digest-pinned bases the Dockerfiles name (release builds; needs a registry)
#   local     no registry: a Debian bookworm minbase made with debootstrap and imported as
#             localhost/debian-min:bookworm, plus a Python layer (docker/local/python.Dockerfile) as
#             localhost/dicomlab-python:3.11-bookworm. Both are cached: built only when missing.
#             The labeling bundle is the one `make frontend` built on this machine (Node 22 cannot be
#             pulled), and the training image is the CPU variant with the torch wheel from pip's
#             configured find-links location (pip inside a build does not read this machine's pip config).
#   auto      (default) upstream when the Docker Hub registry answers, local otherwise.
# Images are tagged localhost/dicomlab-<name>:${DICOMLAB_IMAGE_TAG:-local}. The smoke-test stand-ins
# (s3 = moto's S3 server, orthanc, postgresql from Debian's packages) are only built when named.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TAG=${DICOMLAB_IMAGE_TAG:-local}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_BASE=localhost/debian-min:bookworm
PYTHON_BASE=localhost/dicomlab-python:3.11-bookworm
CONTEXT=$ROOT/build/image-context.$$  # one per run: two builds at once must not share it
ROOTFS=""  # debootstrap's folder while it exists (removed on exit)
TORCH_WHEEL_GLOB='torch-2.13.0+cpu-cp311-*.whl'

log() { printf '[images] %s\n' "$*" >&2; }

# Network steps (debootstrap, apt and pip inside builds) fail now and then on a fresh machine: each build
# is tried up to DICOMLAB_RETRIES times (default 3), 20 s apart, and bounded by DICOMLAB_BUILD_LIMIT seconds
# (default 1500) per try.
RETRIES=${DICOMLAB_RETRIES:-3}
# Without cached layers by default: under vfs (the only storage driver this sandbox runs) every committed
# layer is a full copy of the filesystem, and a clean build (CI) reuses none; DICOMLAB_BUILD_LAYERS=true
# keeps them for quicker rebuilds while changing a Dockerfile.
LAYERS=${DICOMLAB_BUILD_LAYERS:-false}
BUILD_LIMIT=${DICOMLAB_BUILD_LIMIT:-1500}

# retry WHAT COMMAND...: run COMMAND until it succeeds, at most $RETRIES times.
retry() {
  local what=$1 attempt=1; shift
  until "$@"; do
    if [ "$attempt" -ge "$RETRIES" ]; then log "$what failed $attempt times; giving up"; return 1; fi
    log "$what failed (try $attempt of $RETRIES); retrying in 20 s"
    attempt=$((attempt + 1)); sleep 20
  done
}

# limited COMMAND...: COMMAND under the per-try time limit (TERM, then KILL 30 s later).
# --foreground: stay in the caller's process group, so a time limit around this whole script (scripts/deploy-smoke.sh)
# reaches the build too.
limited() { timeout --foreground --kill-after=30 "$BUILD_LIMIT" "$@"; }

registry_reachable() {
  # Docker Hub's registry answers 401 to an anonymous /v2/ when it is reachable at all.
  local code
  code=$(curl -s -o /dev/null -m 8 -w '%{http_code}' https://registry-1.docker.io/v2/ || true)
  [ "$code" = 401 ] || [ "$code" = 200 ]
}

base_mode() {
  case "${DICOMLAB_BASE:-auto}" in
    upstream|local) echo "${DICOMLAB_BASE}" ;;
    auto) if registry_reachable; then echo upstream; else echo local; fi ;;
    *) log "DICOMLAB_BASE must be upstream, local or auto"; exit 2 ;;
  esac
}

# --- the locally made base ------------------------------------------------------------------------
# debootstrap into a fresh folder (removed again, also when it fails) and import it as $DEBIAN_BASE.
debootstrap_base() {
  ROOTFS=$(mktemp -d /var/tmp/dicomlab-rootfs.XXXXXX)
  chmod 0755 "$ROOTFS"  # it becomes the image's /: mktemp's 0700 would lock every non-root user out
  local ok=0
  if limited debootstrap --variant=minbase --include=python3-minimal,ca-certificates bookworm "$ROOTFS" "$MIRROR" \
      > "$ROOT/build/debootstrap.log" 2>&1; then
    # No caches or logs in the image; apt lists are fetched again by the layer that installs packages.
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/* \
      "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/* "$ROOTFS"/usr/share/info/*
    tar -C "$ROOTFS" -c . | podman import --change 'CMD ["/bin/bash"]' - "$DEBIAN_BASE" >/dev/null && ok=1
  else
    tail -5 "$ROOT/build/debootstrap.log" >&2
  fi
  rm -rf "$ROOTFS"; ROOTFS=""
  [ "$ok" = 1 ]
}

ensure_local_base() {
  if ! podman image exists "$DEBIAN_BASE"; then
    log "debootstrap bookworm minbase from $MIRROR (a minute or two, once; build/debootstrap.log)"
    local start=$SECONDS
    retry debootstrap debootstrap_base
    record "$DEBIAN_BASE" "$start"
  fi
  if ! podman image exists "$PYTHON_BASE"; then
    # The site's own certificate authorities (Debian's place for them) go into the local base, so pip in
    # a build trusts the same HTTPS interception or mirror this machine's pip trusts.
    local ctx=$ROOT/build/local-base-context
    rm -rf "$ctx" && mkdir -p "$ctx/ca"
    cp "$ROOT/docker/local/python.Dockerfile" "$ctx/"
    find /usr/local/share/ca-certificates -maxdepth 1 -name '*.crt' -exec cp {} "$ctx/ca/" \; 2>/dev/null || true
    local start=$SECONDS
    log "building $PYTHON_BASE ($(find "$ctx/ca" -name '*.crt' | wc -l) site CA certificates)"
    retry "the Python base" limited podman build -q --isolation chroot --layers="$LAYERS" --build-arg "DEBIAN_IMAGE=$DEBIAN_BASE" \
      -f "$ctx/python.Dockerfile" -t "$PYTHON_BASE" "$ctx" >/dev/null
    record "$PYTHON_BASE" "$start"
  fi
}

# --- the build context: the same allow-list as .dockerignore, plus the local-mode extras ------------
stage_context() {
  rm -rf "$CONTEXT" && mkdir -p "$CONTEXT"
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard -- \
      pyproject.toml constraints.txt README.md services training scripts/build_frontend.py docker/wheelhouse \
      docker/slim_venv.py \
    | xargs -0 -r ls -d 2>/dev/null | tar -c -T - ) | tar -x -C "$CONTEXT"
  mkdir -p "$CONTEXT/docker/wheelhouse"
}

add_frontend_bundle() {
  local dist=$ROOT/services/dicomlab_labeling/static/dist
  if [ ! -f "$dist/manifest.json" ]; then
    log "no viewer bundle in $dist: run 'make frontend' first"; exit 1
  fi
  mkdir -p "$CONTEXT/services/dicomlab_labeling/static"
  cp -a "$dist" "$CONTEXT/services/dicomlab_labeling/static/dist"
}

add_torch_cpu_wheel() {
  # pip's own configuration names the wheelhouse (find-links); the build cannot see it, so copy the wheel.
  local dirs dir wheel=""
  dirs=$(pip3 config get global.find-links 2>/dev/null || true)
  dirs="$dirs ${PIP_FIND_LINKS:-} ${DICOMLAB_WHEELHOUSE:-}"
  for dir in $dirs; do
    dir=${dir#file://}
    for candidate in "$dir"/$TORCH_WHEEL_GLOB; do
      [ -f "$candidate" ] && wheel=$candidate && break 2
    done
  done
  if [ -z "$wheel" ]; then
    log "no $TORCH_WHEEL_GLOB in pip's find-links ($dirs): set DICOMLAB_WHEELHOUSE to a folder holding it"; exit 1
  fi
  cp "$wheel" "$CONTEXT/docker/wheelhouse/"
}

# record IMAGE START: log the image's size and build time, and add them to build/image-times.txt (the
# deploy smoke's timing summary prints that file).
record() {
  local line
  line="$1: $(podman image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1/1e6}') in $((SECONDS - $2)) s"
  log "$line"
  echo "$line" >> "$ROOT/build/image-times.txt"
}

# build_once LOG ARGS...: one podman build try, its output in LOG (the last lines shown when it fails).
build_once() {
  local logfile=$1; shift
  limited podman build --isolation chroot --layers="$LAYERS" "$@" > "$logfile" 2>&1 || { tail -25 "$logfile" >&2; return 1; }
}

build() {
  local name=$1 mode=$2; shift 2
  local image=localhost/dicomlab-$name:$TAG start=$SECONDS old
  old=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
  log "building $image ($mode base)"
  retry "$name" build_once "$ROOT/build/images-$name.log" --format docker -f "$ROOT/docker/$name.Dockerfile" \
    -t "$image" "$@" "$CONTEXT" || { log "$name failed (build/images-$name.log)"; exit 1; }
  record "$image" "$start"
  # vfs keeps a full copy of every image: drop the one this build replaced (only if nothing else uses it)
  if [ -n "$old" ] && [ "$old" != "$(podman image inspect --format '{{.Id}}' "$image")" ]; then
    podman rmi "$old" >/dev/null 2>&1 || true
  fi
}

main() {
  local names=("$@")
  [ ${#names[@]} -gt 0 ] || names=(proxy manifest labeling training)
  command -v podman >/dev/null || { log "podman is missing: scripts/install-system-deps.sh --containers"; exit 1; }
  local mode
  mode=$(base_mode)
  mkdir -p "$ROOT/build"
  trap 'rm -rf "$CONTEXT" ${ROOTFS:+"$ROOTFS"}' EXIT
  trap 'exit 143' TERM INT  # a time limit or Ctrl-C still runs the EXIT trap
  stage_context
  local common=()
  if [ "$mode" = local ]; then
    ensure_local_base
    common=(--build-arg "PYTHON_IMAGE=$PYTHON_BASE")
  fi
  for name in "${names[@]}"; do
    case "$name" in
      proxy|manifest) build "$name" "$mode" "${common[@]}" ;;
      labeling)
        if [ "$mode" = local ]; then
          add_frontend_bundle
          # With --layers=false, podman 4.3 fails this build after tagging it ("identifier is not an
          # image"): one of its stages is FROM another stage (frontend_${FRONTEND}).
          LAYERS=true build labeling "$mode" "${common[@]}" --build-arg FRONTEND=prebuilt
        else
          build labeling "$mode"
        fi ;;
      training)
        if [ "$mode" = local ]; then
          add_torch_cpu_wheel
          build training "$mode" "${common[@]}" --build-arg TORCH_VARIANT=cpu
        else
          build training "$mode"
        fi ;;
      s3|orthanc|postgresql)
        [ "$mode" = local ] || ensure_local_base  # the stand-ins always build on the local Debian base
        build_standin "$name" ;;
      *) log "unknown image $name"; exit 2 ;;
    esac
  done
}

# Test-only stand-ins for the upstream images the chart pulls (docker/local/<name>.Dockerfile).
build_standin() {
  local name=$1 image=localhost/dicomlab-smoke-$1:$TAG
  if podman image exists "$image" && [ -z "${DICOMLAB_REBUILD_STANDINS:-}" ]; then
    log "$image exists (cached)"; return
  fi
  local start=$SECONDS
  log "building $image"
  retry "$name" build_once "$ROOT/build/images-$name.log" -f "$ROOT/docker/local/$name.Dockerfile" -t "$image" \
    --build-arg "DEBIAN_IMAGE=$DEBIAN_BASE" --build-arg "PYTHON_IMAGE=$PYTHON_BASE" "$ROOT/docker/local" \
    || { log "$name failed (build/images-$name.log)"; exit 1; }
  record "$image" "$start"
}

main "$@"
