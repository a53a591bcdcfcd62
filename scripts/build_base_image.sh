#!/usr/bin/env bash
# Build the Python base image of the service image from Debian packages alone, with no
# container registry: debootstrap a minimal Debian bookworm root filesystem (Python 3.11.2,
# pip, libgomp1 for LightGBM), import it with `podman import`, then apply the security updates
# in one squashed layer.
#
#   bash scripts/build_base_image.sh            # skips the build if the image already exists
#   FORCE=1 bash scripts/build_base_image.sh    # rebuilds it
#
# Settings (environment):
#   BASE_IMAGE       image to create (default localhost/credit-pd-base:bookworm); bentofile.yaml's
#                    docker.base_image names the same image
#   MIRROR           Debian archive (default: the first .../debian URI in this machine's apt sources)
#   SECURITY_MIRROR  Debian security archive (default: from the apt sources too)
#   FORCE=1          rebuild even if BASE_IMAGE exists
#
# Needs root, podman and debootstrap (`make image-test` installs them with apt-get).
#
# Why each piece is there: BentoML's Dockerfile for a custom base image (template base.j2)
# installs no Python and no system packages. It runs `groupadd`/`useradd` (passwd, in minbase),
# `pip install uv==...` into the system Python (hence python3-pip and
# PIP_BREAK_SYSTEM_PACKAGES=1, since Debian marks its Python externally managed), then
# `uv venv -p 3.11` (finds /usr/bin/python3.11, so uv downloads no Python) and `uv pip install`
# of the bento's locked requirements. docker.system_packages is ignored with a custom base
# image, so libgomp1 (LightGBM's OpenMP runtime) has to be here. SSL_CERT_FILE makes uv use the
# system CA bundle (instead of its built-in roots), so a CA bundle mounted at build time
# (scripts/build_image.sh does this) is honoured by pip and uv alike.
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-localhost/credit-pd-base:bookworm}
SUITE=bookworm
PACKAGES=python3,python3-venv,python3-pip,python-is-python3,libgomp1,ca-certificates

log() { printf '[build_base_image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ "${FORCE:-0}" != 1 ]] && podman image exists "$BASE_IMAGE" 2>/dev/null; then
    log "$BASE_IMAGE exists; skipping (FORCE=1 rebuilds it)"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "debootstrap needs root"
for tool in podman debootstrap tar; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y podman runc debootstrap)"
done

# The archive URIs this machine's apt already uses (deb822 .sources files and one-line .list
# files), so the image is built from the same mirror as the host's packages.
apt_uris() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] && awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] && awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) print $i }' "$f"
    done
    return 0
}
uris=$(apt_uris)
MIRROR=${MIRROR:-$(grep -E '/debian/?$' <<<"$uris" | head -n1 || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
MIRROR=${MIRROR%/}
SECURITY_MIRROR=${SECURITY_MIRROR:-$(grep -E '/debian-security/?$' <<<"$uris" | head -n1 || true)}
SECURITY_MIRROR=${SECURITY_MIRROR:-${MIRROR%/debian}/debian-security}
SECURITY_MIRROR=${SECURITY_MIRROR%/}
log "mirror $MIRROR, security mirror $SECURITY_MIRROR"

workdir=$(mktemp -d /var/tmp/credit-pd-base.XXXXXX)
rootfs=$workdir/rootfs
cleanup() {
    # debootstrap mounts /proc and /sys inside the target and may leave them mounted when it
    # fails: unmount everything below the work dir before deleting it, and never cross a mount.
    local m
    if command -v findmnt >/dev/null; then
        { findmnt -rn -o TARGET | grep -F "$workdir/" | sort -r || true; } | while read -r m; do umount -l "$m" || true; done
    fi
    rm -rf --one-file-system "$workdir" || true
}
trap cleanup EXIT

start=$SECONDS
log "debootstrap --variant=minbase $SUITE ($PACKAGES)"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >"$workdir/debootstrap.log" 2>&1 || {
    tail -n 40 "$workdir/debootstrap.log" >&2
    [[ -f $rootfs/debootstrap/debootstrap.log ]] && tail -n 40 "$rootfs/debootstrap/debootstrap.log" >&2
    die "debootstrap failed"
}
log "debootstrap done in $((SECONDS - start)) s"

# Apt sources for anything layered on top (including the update step below): the release,
# its updates and the security archive, from the same mirrors.
rm -f "$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
# Like the Debian images: no recommends, no package cache kept, no man pages or locales
# beyond C, and a hostname/resolv.conf that the container runtime provides.
cat >"$rootfs/etc/apt/apt.conf.d/90credit-pd" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/90credit-pd-nodoc" <<'EOF'
path-exclude /usr/share/man/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
EOF
# debootstrap installed the docs and translations the dpkg filter above now drops: drop them too.
find "$rootfs/usr/share/doc" -mindepth 1 -depth ! -name copyright \( -type f -o -type l -o -type d -empty \) -delete
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* \
    "$rootfs"/etc/hostname "$rootfs"/etc/resolv.conf "$rootfs"/debootstrap
: >"$rootfs/etc/machine-id"

stage=$BASE_IMAGE-rootfs
log "podman import -> $stage"
tar -C "$rootfs" --numeric-owner -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    - "$stage" >/dev/null

# Security and point-release updates, the environment, one squashed layer.
cat >"$workdir/Containerfile" <<EOF
FROM $stage
ENV LANG=C.UTF-8 \\
    PIP_BREAK_SYSTEM_PACKAGES=1 \\
    PIP_NO_CACHE_DIR=1 \\
    PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
RUN set -eux; \\
    export DEBIAN_FRONTEND=noninteractive; \\
    apt-get update; \\
    apt-get -y upgrade; \\
    apt-get clean; \\
    rm -rf /var/lib/apt/lists/* /var/log/apt/* /var/log/dpkg.log /var/cache/debconf/*-old; \\
    python3 --version; pip --version; python -c 'import ssl, venv, ensurepip'
LABEL org.opencontainers.image.title="credit-pd-base" \\
      org.opencontainers.image.description="Debian $SUITE minbase with Python 3 (debootstrap + podman import)"
CMD ["python3"]
EOF
old_id=$(podman image inspect --format '{{.Id}}' "$BASE_IMAGE" 2>/dev/null || true)
mkdir -p "$workdir/empty-context"
log "podman build (apt-get upgrade, squash) -> $BASE_IMAGE"
podman build --network host --squash-all -t "$BASE_IMAGE" -f "$workdir/Containerfile" "$workdir/empty-context" 2>&1 \
    | sed 's/^/    /' >&2 || die "podman build of $BASE_IMAGE failed"
podman rmi "$stage" >/dev/null || true
# A rebuild (FORCE=1) leaves the previous image untagged: remove it unless something uses it.
if [[ -n $old_id && $old_id != "$(podman image inspect --format '{{.Id}}' "$BASE_IMAGE")" ]]; then
    podman rmi "$old_id" >/dev/null 2>&1 || true
fi

log "$BASE_IMAGE built in $((SECONDS - start)) s: $(podman image inspect --format '{{.Size}}' "$BASE_IMAGE") bytes, $(podman run --rm --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network none "$BASE_IMAGE" python3 --version)"
