#!/usr/bin/env bash
# Install the Debian packages dicomlab's local stack and tests use. Idempotent: does nothing when
# everything is already installed; runs `apt-get update` once before installing what is missing.
set -euo pipefail

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
  echo "system packages: all present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "missing Debian packages: ${missing[*]} — install them as root (apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi
echo "installing Debian packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the services it installs where it can; dicomlab runs its own on free ports.
for svc in orthanc postgresql nginx prometheus prometheus-pushgateway prometheus-node-exporter; do
  $SUDO service "$svc" stop >/dev/null 2>&1 || true
done
echo "system packages: installed"
