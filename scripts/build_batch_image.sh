#!/usr/bin/env bash
# Build the batch scoring image (deploy/batch/Containerfile) with hadoop-aws and the AWS SDK jars
# baked in, so the SparkApplication needs no Maven at submit time (batch.hadoopAwsPackages: []).
#
#   bash scripts/build_batch_image.sh                            # model credit_pd_model:latest
#   MODEL_TAG=credit_pd_model:abc123 bash scripts/build_batch_image.sh
#
# Versions come from the environment the job runs with, not from a list kept here: Spark is the
# installed pyspark's, Hadoop the version of pyspark's hadoop-client-api jar, hadoop-aws that same
# Hadoop version (s3a must match Hadoop exactly), and the AWS SDK v2 bundle the version that Hadoop
# release was built and tested with (the aws-java-sdk-v2.version property of its hadoop-project
# POM). Every jar is checked against Maven Central's SHA-1. Spark's Kubernetes entrypoint.sh comes
# from the Spark release tag matching pyspark. The build machine needs HTTPS to Maven Central and
# GitHub (the cluster needs neither). Prints the image reference on stdout.
#
# Settings (environment):
#   MODEL_TAG       model to bake into the image's store (default credit_pd_model:latest, resolved)
#   IMAGE_NAME      repository (default credit-pd-batch; the ECR repository to push to)
#   IMAGE_TAG       tag (default <model version>-<date>); never `latest`
#   BASE_IMAGE      base image (default docker.io/library/python:3.11-slim-bookworm)
#   CONTAINER_TOOL  podman or docker (default: podman when installed)
#   MAVEN           Maven repository URL (default https://repo1.maven.org/maven2)
#   ENTRYPOINT_URL  Spark's entrypoint.sh (default: the apache/spark tag of pyspark's version)
#   PYTHON          Python with the project's `spark` extra and bentoml (default .venv/bin/python)
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
MAVEN=${MAVEN:-https://repo1.maven.org/maven2}
IMAGE_NAME=${IMAGE_NAME:-credit-pd-batch}
BASE_IMAGE=${BASE_IMAGE:-docker.io/library/python:3.11-slim-bookworm}
MODEL_TAG=${MODEL_TAG:-credit_pd_model:latest}
export BENTOML_DO_NOT_TRACK=true

log() { printf '[build_batch_image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ -z ${CONTAINER_TOOL:-} ]]; then
    CONTAINER_TOOL=$(command -v podman || command -v docker || true)
fi
[[ -n $CONTAINER_TOOL ]] || die "neither podman nor docker found"
command -v curl >/dev/null || die "curl not found"
"$PYTHON" -c 'import pyspark, bentoml' 2>/dev/null || die "$PYTHON lacks pyspark or bentoml (make install)"

spark_version=$("$PYTHON" -c 'import pyspark; print(pyspark.__version__)')
jars_dir=$("$PYTHON" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')
hadoop_jar=$(ls "$jars_dir"/hadoop-client-api-*.jar 2>/dev/null | head -1)
[[ -n $hadoop_jar ]] || die "no hadoop-client-api jar in $jars_dir"
hadoop_version=$(basename "$hadoop_jar" .jar); hadoop_version=${hadoop_version#hadoop-client-api-}
model=$("$PYTHON" -c 'import sys, bentoml; print(bentoml.models.get(sys.argv[1]).tag)' "$MODEL_TAG" 2>/dev/null) \
    || die "model $MODEL_TAG not in the store ${BENTOML_HOME:-~/bentoml} (make train)"
IMAGE_TAG=${IMAGE_TAG:-${model#*:}-$(date -u +%Y%m%d)}
[[ $IMAGE_TAG != latest ]] || die "IMAGE_TAG=latest: pin a tag (the chart refuses latest)"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/credit-pd-batch-image.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/jars" "$scratch/project"

# fetch URL FILE: download and verify against Maven Central's .sha1 (the checksum beside it).
fetch() {
    curl -fsSL --retry 3 -o "$2" "$1" || die "download failed: $1"
    local expected
    expected=$(curl -fsSL --retry 3 "$1.sha1" | cut -c1-40) || die "no checksum: $1.sha1"
    echo "$expected  $2" | sha1sum -c --quiet - || die "SHA-1 mismatch: $1"
}

pom="$scratch/hadoop-project.pom"
fetch "$MAVEN/org/apache/hadoop/hadoop-project/$hadoop_version/hadoop-project-$hadoop_version.pom" "$pom"
sdk_version=$(sed -n 's:.*<aws-java-sdk-v2.version>\(.*\)</aws-java-sdk-v2.version>.*:\1:p' "$pom" | head -1)
[[ -n $sdk_version ]] || die "no aws-java-sdk-v2.version in hadoop-project $hadoop_version"
log "Spark $spark_version, Hadoop $hadoop_version: hadoop-aws $hadoop_version, AWS SDK bundle $sdk_version; model $model"
fetch "$MAVEN/org/apache/hadoop/hadoop-aws/$hadoop_version/hadoop-aws-$hadoop_version.jar" \
      "$scratch/jars/hadoop-aws-$hadoop_version.jar"
fetch "$MAVEN/software/amazon/awssdk/bundle/$sdk_version/bundle-$sdk_version.jar" \
      "$scratch/jars/bundle-$sdk_version.jar"

ENTRYPOINT_URL=${ENTRYPOINT_URL:-https://raw.githubusercontent.com/apache/spark/v$spark_version/resource-managers/kubernetes/docker/src/main/dockerfiles/spark/entrypoint.sh}
curl -fsSL --retry 3 -o "$scratch/entrypoint.sh" "$ENTRYPOINT_URL" || die "download failed: $ENTRYPOINT_URL"
head -1 "$scratch/entrypoint.sh" | grep -q '^#!' || die "$ENTRYPOINT_URL is not a script"

cp -R pyproject.toml batch_score.py credit_pd "$scratch/project/"
find "$scratch/project" -name __pycache__ -prune -exec rm -rf {} +
"$PYTHON" -m bentoml models export "$model" "$scratch/model.bentomodel" >&2

start=$SECONDS
"$CONTAINER_TOOL" build -f deploy/batch/Containerfile --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    -t "$IMAGE_NAME:$IMAGE_TAG" "$scratch" >&2
log "built $IMAGE_NAME:$IMAGE_TAG in $((SECONDS - start)) s (chart: batch.image.tag=$IMAGE_TAG, batch.modelTag=$model, batch.hadoopAwsPackages empty)"
echo "$IMAGE_NAME:$IMAGE_TAG"
