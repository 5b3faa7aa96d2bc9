#!/usr/bin/env bash
# Debian packages the test suite needs: PostgreSQL 15 with PostGIS 3 (catalog tests),
# Redis (tile cache tests), Chromium and its WebDriver (web viewer tests), Node.js and
# npm (the MapLibre style validator, installed by `npm ci --prefix viewer` in the tests),
# SLURM and munge (cluster tests: a single-node SLURM, sdmatlas.testing.localslurm), and
# kubectl where none is installed (it renders the kustomize overlays in the tests), and
# gdal-bin (gdalinfo reads the category names of class-layer COGs; gdal2tiles for bench/).
# Installs only what is missing; the servers themselves are started by the tests
# (throwaway instances in temporary directories), never as system services.
set -euo pipefail

missing=()
[ -f /usr/share/postgresql/15/extension/postgis.control ] || missing+=(postgresql-15-postgis-3)
[ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql-15)
[ -f /usr/share/postgresql/15/extension/pg_trgm.control ] || missing+=(postgresql-contrib)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
[ -d /usr/share/fonts/truetype/dejavu ] || missing+=(fonts-dejavu-core)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
[ -x /usr/sbin/slurmctld ] || missing+=(slurmctld)
[ -x /usr/sbin/slurmd ] || missing+=(slurmd)
command -v sbatch >/dev/null || missing+=(slurm-client)
[ -x /usr/sbin/munged ] || missing+=(munge)
command -v kubectl >/dev/null || missing+=(kubernetes-client)
command -v gdalinfo >/dev/null || missing+=(gdal-bin)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "installing Debian packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then SUDO="sudo"; else
        echo "error: ${missing[*]} missing and not root (run this script as root once)" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-install-recommends keeps the image small; the cluster created by the
# package is not used (tests make their own), so it is stopped if it was started.
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
    $SUDO pg_ctlcluster 15 main stop || true
fi
# likewise the packaged SLURM and munge services (the tests start their own)
for svc in slurmctld slurmd munge; do
    if command -v service >/dev/null && pgrep -x "${svc%e}d" >/dev/null 2>&1; then
        $SUDO service "$svc" stop >/dev/null 2>&1 || true
    fi
done
# likewise the packaged Redis service, where a service manager started it
if command -v service >/dev/null && pgrep -x redis-server >/dev/null; then
    $SUDO service redis-server stop >/dev/null 2>&1 || true
fi
