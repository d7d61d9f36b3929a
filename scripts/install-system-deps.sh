#!/usr/bin/env bash
# Install the Debian packages dicomlab's local stack and tests use. Idempotent: does nothing when
# everything is already installed; runs `apt-get update` once before installing what is missing.
#   --containers   instead: what `make images` / `make deploy-smoke` need (podman, buildah, runc,
#                  debootstrap) plus /etc/containers settings that work in a sandbox (see configure_containers)
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

# Rootful podman where the sandbox cannot raise rlimits and crun rejects the cgroup mode: vfs storage
# (no overlay mounts needed), runc, and default ulimits no higher than the sandbox's own. Only these
# keys are written; a file that already sets them is left alone, other settings are kept.
configure_containers() {
  $SUDO mkdir -p /etc/containers
  set_toml_key /etc/containers/storage.conf storage driver '"vfs"'
  set_toml_key /etc/containers/storage.conf storage graphroot '"/var/lib/containers/storage"'
  set_toml_key /etc/containers/storage.conf storage runroot '"/run/containers/storage"'
  set_toml_key /etc/containers/containers.conf containers default_ulimits '["nofile=1024:1024", "nproc=1024:1024"]'
  set_toml_key /etc/containers/containers.conf engine runtime '"runc"'
}

# set_toml_key FILE SECTION KEY VALUE: add `KEY = VALUE` under [SECTION] unless the section already sets KEY.
set_toml_key() {
  local file=$1 section=$2 key=$3 value=$4
  $SUDO touch "$file"
  if awk -v s="[$section]" -v k="$key" '
      /^[[:space:]]*\[/ {in_s = (index($0, s) == 1); next}
      in_s {line = $0; sub(/[[:space:]]*=.*/, "", line); gsub(/[[:space:]]/, "", line); if (line == k) found = 1}
      END {exit found ? 0 : 1}' "$file"; then
    return 0
  fi
  if grep -q "^\[$section\]" "$file"; then
    $SUDO sed -i "/^\[$section\]/a $key = $value" "$file"
  else
    printf '\n[%s]\n%s = %s\n' "$section" "$key" "$value" | $SUDO tee -a "$file" >/dev/null
  fi
}

if [ "${1:-}" = "--containers" ]; then
  PACKAGES=(podman buildah runc fuse-overlayfs debootstrap uidmap)
else
PACKAGES=(
  orthanc orthanc-dicomweb orthanc-postgresql   # the PACS, its DICOMweb plugin and PostgreSQL index
  postgresql                                    # production-path database (tests start their own cluster)
  dcmtk                                         # dsrdump: reading written SR in tests
  dicom3tools                                   # dciodvfy: validating written SR (IOD, codes, templates)
  chromium                                      # headless browser tests (driven by Playwright)
  nginx-light                                   # the reference-design baseline in the proxy benchmark
  prometheus prometheus-pushgateway             # `dicomlab stack up --monitoring`, promtool in tests
  nodejs npm                                    # building the viewer bundle
)
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

# node/npm may come from elsewhere (e.g. NodeSource); accept them when present on PATH.
if command -v node >/dev/null && command -v npm >/dev/null; then
  filtered=()
  for pkg in "${missing[@]}"; do [[ "$pkg" == nodejs || "$pkg" == npm ]] || filtered+=("$pkg"); done
  missing=("${filtered[@]}")
fi

if [ ${#missing[@]} -eq 0 ]; then
  [ "${1:-}" = "--containers" ] && configure_containers
  echo "system packages: all present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
  echo "missing Debian packages: ${missing[*]} — install them as root (apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
# A fresh machine's first apt run meets mirror hiccups now and then: three tries, 20 s apart.
apt_install() {
  $SUDO apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
for try in 1 2 3; do
  apt_install && break
  if [ "$try" = 3 ]; then echo "apt-get could not install: ${missing[*]}" >&2; exit 1; fi
  echo "apt-get failed (try $try of 3); retrying in 20 s" >&2; sleep 20
done
# Debian starts the services it installs where it can; dicomlab runs its own on free ports.
for svc in orthanc postgresql nginx prometheus prometheus-pushgateway prometheus-node-exporter; do
  $SUDO service "$svc" stop >/dev/null 2>&1 || true
done
[ "${1:-}" = "--containers" ] && configure_containers
echo "system packages: installed"
