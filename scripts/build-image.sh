#!/usr/bin/env bash
# scripts/build-image.sh: builds the rtu-operator container image without docker or a registry.
#
#   1. cargo build --release --locked --bin rtu
#   2. a root filesystem: /usr/local/bin/rtu, exactly the shared libraries `ldd` lists (at the
#      paths it lists, dynamic loader included), /etc/passwd and /etc/group with nonroot 65532,
#      /etc/nsswitch.conf, /etc/ssl/certs/ca-certificates.crt, /tmp, /home/nonroot
#   3. an OCI image-layout archive of it (scripts/oci-layout.py, Python standard library):
#      User 65532:65532, Entrypoint ["/usr/local/bin/rtu"], reproducible digest
#
# The Dockerfile runs step 2 (--rootfs) in its builder stage, so both images have the same
# content. Usage:
#   scripts/build-image.sh                  # -> dist/rtu-operator-<version>.oci.tar
#   scripts/build-image.sh --out FILE       # the archive elsewhere
#   scripts/build-image.sh --rootfs DIR     # only the root filesystem, into DIR (empty or new)
#   scripts/build-image.sh --no-build       # the release binary already built, as it is
# Load it elsewhere: skopeo copy oci-archive:FILE docker-daemon:rtu-operator:<version>
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

out="" rootfs_only="" build=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --rootfs) rootfs_only=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

# The same build cache as scripts/test.sh.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${RTU_TESTENV_CACHE:-$HOME/.cache/rtu-testenv}/cargo-target}
NONROOT=65532
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

# RTU_IMAGE_BINARY: package this binary instead (the tests use the debug build they already
# have, so CI does not build a release binary only to check the image's layout).
if [[ -n ${RTU_IMAGE_BINARY:-} ]]; then
  bin=$RTU_IMAGE_BINARY
else
  if [[ $build == 1 ]]; then
    cargo build --release --locked --bin rtu
  fi
  bin=$CARGO_TARGET_DIR/release/rtu
fi
version=$("$bin" --version | awk '{print $2}')

if [[ -n $rootfs_only ]]; then
  rootfs=$rootfs_only
  mkdir -p "$rootfs"
  if [[ -n $(ls -A "$rootfs") ]]; then
    echo "build-image.sh: $rootfs is not empty" >&2
    exit 1
  fi
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  rootfs=$work/rootfs
  mkdir "$rootfs"
fi

# --- root filesystem -------------------------------------------------------------------------
install -D -m 0755 "$bin" "$rootfs/usr/local/bin/rtu"

# `ldd` lines: "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)", the loader as
# "/lib64/ld-linux-x86-64.so.2 (0x...)", "linux-vdso.so.1 (0x...)" (kernel, no file).
ldd_out=$(ldd "$bin")
if grep -q 'not found' <<<"$ldd_out"; then
  echo "build-image.sh: unresolved libraries:" >&2
  grep 'not found' <<<"$ldd_out" >&2
  exit 1
fi
libs=$(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$ldd_out" | sort -u)
if ! grep -q '/ld-linux' <<<"$libs"; then
  echo "build-image.sh: no dynamic loader in ldd output:" >&2
  echo "$ldd_out" >&2
  exit 1
fi
for lib in $libs; do
  # The file itself (symlinks resolved), at the path the loader asks for.
  install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
done

install -d -m 0755 "$rootfs/etc/ssl/certs"
install -m 0644 "$CA_BUNDLE" "$rootfs$CA_BUNDLE"
printf '%s\n' \
  'root:x:0:0:root:/root:/sbin/nologin' \
  'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
  "nonroot:x:$NONROOT:$NONROOT:nonroot:/home/nonroot:/sbin/nologin" >"$rootfs/etc/passwd"
printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' "nonroot:x:$NONROOT:" >"$rootfs/etc/group"
# Without it glibc still resolves, but files (e.g. /etc/hosts of the pod) would come second.
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group" "$rootfs/etc/nsswitch.conf"
install -d -m 1777 "$rootfs/tmp"
install -d -m 0700 "$rootfs/home/nonroot"
# Every directory the installs above created: 0755 whatever the umask.
find "$rootfs" -type d ! -path "$rootfs/tmp" ! -path "$rootfs/home/nonroot" -exec chmod 0755 {} +

if [[ -n $rootfs_only ]]; then
  # The Dockerfile copies it as is: the owner of /home/nonroot must be set here (needs root).
  chown "$NONROOT:$NONROOT" "$rootfs/home/nonroot"
  echo "build-image.sh: rtu $version root filesystem in $rootfs"
  exit 0
fi

# --- OCI archive -----------------------------------------------------------------------------
out=${out:-dist/rtu-operator-$version.oci.tar}
mkdir -p "$(dirname "$out")"
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [[ $revision != unknown ]] && ! git diff --quiet HEAD 2>/dev/null; then
  revision+=-dirty
fi
# Reproducible: the commit time, not now (SOURCE_DATE_EPOCH overrides).
created=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
description=$(sed -n 's/^description = "\(.*\)"$/\1/p' Cargo.toml)
python3 scripts/oci-layout.py \
  --rootfs "$rootfs" --out "$out" --name "rtu-operator:$version" \
  --user "$NONROOT:$NONROOT" --entrypoint /usr/local/bin/rtu --cmd=--help \
  --env PATH=/usr/local/bin:/usr/bin:/bin \
  --env SSL_CERT_FILE=$CA_BUNDLE \
  --workdir /home/nonroot \
  --owner "home/nonroot=$NONROOT:$NONROOT" \
  --created "$created" \
  --label org.opencontainers.image.title=rtu-operator \
  --label "org.opencontainers.image.description=$description" \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.revision=$revision" \
  --label org.opencontainers.image.licenses=Apache-2.0
