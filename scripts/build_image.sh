#!/usr/bin/env bash
# Build the service's OCI image from a bento with podman (no Docker engine, no registry needed).
#
#   bash scripts/build_image.sh                          # the latest credit_pd_service bento
#   bash scripts/build_image.sh credit_pd_service:abc123 # a given bento
#
# The image is tagged credit-pd-service:<bento version> (IMAGE_TAG overrides the whole name).
# The bento's Dockerfile (bentofile.yaml + deploy/image/Dockerfile.template) starts FROM BentoML's
# standard base (python:3.11-slim) unless BASE_IMAGE names another one, passed as a build
# argument; a local one (localhost/...) is the air-gapped Debian base, built first when absent
# (scripts/build_base_image.sh). `make image` sets BASE_IMAGE=localhost/credit-pd-base:bookworm.
# The bento's models are copied from the BentoML model store ($BENTOML_HOME) at this step, so
# the model must be in that store.
#
# Settings (environment):
#   BASE_IMAGE       base image of the service image (default: the bento's, python:3.11-slim)
#   IMAGE_NAME       repository part of the tag (default credit-pd-service)
#   IMAGE_TAG        full tag, overriding IMAGE_NAME:<bento version>
#   BUILD_CA_BUNDLE  CA bundle bind-mounted (read-only, build steps only, not stored in the image)
#                    over the image's /etc/ssl/certs/ca-certificates.crt, so pip and uv reach
#                    PyPI through a TLS-intercepting proxy; default: this machine's bundle;
#                    empty: no mount
#   BENTOML          bentoml executable (default .venv/bin/bentoml)
#   PYTHON           Python with bentoml installed (default .venv/bin/python)
#   EXTRA_OPTS       more `bentoml containerize` options, e.g. "--opt no-cache"
set -euo pipefail

cd "$(dirname "$0")/.."
BENTO=${1:-credit_pd_service:latest}
BENTOML=${BENTOML:-.venv/bin/bentoml}
PYTHON=${PYTHON:-.venv/bin/python}
IMAGE_NAME=${IMAGE_NAME:-credit-pd-service}
BUILD_CA_BUNDLE=${BUILD_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}
export BENTOML_DO_NOT_TRACK=${BENTOML_DO_NOT_TRACK:-true}

log() { printf '[build_image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v podman >/dev/null || die "podman not found (apt-get install -y podman runc)"
[[ -x $BENTOML ]] || die "$BENTOML not found (make install)"

# The bento's version.
version=$("$PYTHON" -c 'import sys, bentoml; print(bentoml.get(sys.argv[1]).tag.version)' "$BENTO") \
    || die "bento $BENTO not found in the store ${BENTOML_HOME:-~/bentoml} (make build)"
IMAGE_TAG=${IMAGE_TAG:-$IMAGE_NAME:$version}
BASE_IMAGE=${BASE_IMAGE:-}
log "bento $BENTO (version $version), base image ${BASE_IMAGE:-of the bentofile}, image $IMAGE_TAG"

opts=(--backend podman --image-tag "$IMAGE_TAG" --opt network=host)
case $BASE_IMAGE in
    "") log "standard base image (bentofile.yaml): podman must be able to pull it" ;;
    localhost/*)
        BASE_IMAGE=$BASE_IMAGE bash scripts/build_base_image.sh
        opts+=(--opt "build-arg=BASE_IMAGE=$BASE_IMAGE") ;;
    *) opts+=(--opt "build-arg=BASE_IMAGE=$BASE_IMAGE") ;;
esac
if [[ -n $BUILD_CA_BUNDLE ]]; then
    [[ -f $BUILD_CA_BUNDLE ]] || die "BUILD_CA_BUNDLE=$BUILD_CA_BUNDLE is not a file"
    opts+=(--opt "volume=$BUILD_CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
fi
# shellcheck disable=SC2206  # EXTRA_OPTS is split on purpose
opts+=(${EXTRA_OPTS:-})

# BentoML 1.4.40 copies the bento to a temporary build context and re-reads the bento's
# Dockerfile.template from there, refusing any path outside the working directory: run it from a
# scratch directory that is also its TMPDIR, so the build context is inside the working directory.
BENTOML=$(realpath "$BENTOML")
scratch=$(mktemp -d "${TMPDIR:-/tmp}/credit-pd-containerize.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
start=$SECONDS
log "$BENTOML containerize ${opts[*]} $BENTO"
(cd "$scratch" && TMPDIR=$scratch "$BENTOML" containerize "${opts[@]}" "$BENTO")
size=$(podman image inspect --format '{{.Size}}' "$IMAGE_TAG")
log "built $IMAGE_TAG in $((SECONDS - start)) s, $((size / 1000000)) MB"
cat >&2 <<EOF
[build_image] run it (podman flags this machine needs; -p 3000:3000 instead of --network host elsewhere):
    podman run --rm --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network host $IMAGE_TAG
EOF
echo "$IMAGE_TAG"
