#!/usr/bin/env bash
# Builds vigil's container image and writes it as an OCI archive (`make image`).
#
#   deploy/image/build.sh [--debug] [--out FILE]      (default: release, target/vigil-image.tar)
#
# The image is FROM scratch: one statically linked binary (/vigil, glibc linked in with
# +crt-static, symbols stripped) and the CA bundle the HTTPS client needs to start
# (rustls-platform-verifier refuses to build a client with no root certificate at all). No
# shell, no package manager, user 65532. No base image is pulled, so it builds offline.
#
# Load it with `kind load image-archive FILE`, `ctr images import FILE`, or push it with
# `skopeo copy oci-archive:FILE docker://REGISTRY/vigil:TAG`. Inside the archive the image is
# named docker.io/library/vigil:VERSION, which is what `image: vigil:VERSION` in deploy/
# resolves to on a node.
#
# Needs buildah (Debian's package; `make deps` installs it), run as root or with a working
# rootless setup. Storage is a throw-away vfs store under target/, removed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

profile=release
out=target/vigil-image.tar
while [ $# -gt 0 ]; do
	case "$1" in
	--debug) profile=debug ;;
	--release) profile=release ;;
	--out) out=$2; shift ;;
	*) echo "usage: $0 [--debug|--release] [--out FILE]" >&2; exit 2 ;;
	esac
	shift
done

command -v buildah >/dev/null || { echo "$0: buildah not found (make deps installs it)" >&2; exit 1; }
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca_bundle" ] || { echo "$0: $ca_bundle missing (Debian's ca-certificates)" >&2; exit 1; }

# The gnu target named explicitly: RUSTFLAGS then reach only the target's code, not build
# scripts and proc macros, which stay dynamic (and shared with the host build).
target=x86_64-unknown-linux-gnu
cargo_profile=()
[ "$profile" = release ] && cargo_profile=(--release)
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
	${CARGO:-cargo} build --locked --quiet --target "$target" "${cargo_profile[@]}" --bin vigil
binary="target/$target/$profile/vigil"
if readelf -d "$binary" | grep -q NEEDED; then
	echo "$0: $binary is dynamically linked:" >&2
	readelf -d "$binary" | grep NEEDED >&2
	exit 1
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
# Where the source lives: the origin remote (without credentials), or VIGIL_IMAGE_SOURCE.
source_url=${VIGIL_IMAGE_SOURCE:-$(git config --get remote.origin.url 2>/dev/null | sed -E 's#//[^/@]*@#//#' || true)}
source_url=${source_url:-unknown}

work=$(mktemp -d "$PWD/target/image-build.XXXXXX")
storage=(--storage-driver vfs --root "$work/storage" --runroot "$work/run")
container=
cleanup() {
	[ -n "$container" ] && buildah "${storage[@]}" rm "$container" >/dev/null 2>&1
	rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/rootfs"
strip --strip-all -o "$work/rootfs/vigil" "$binary"

container=$(buildah "${storage[@]}" from --quiet scratch)
buildah "${storage[@]}" copy --quiet --chown 0:0 --chmod 0555 "$container" "$work/rootfs/vigil" /vigil
buildah "${storage[@]}" copy --quiet --chown 0:0 --chmod 0444 "$container" "$ca_bundle" "$ca_bundle"
labels=(
	--label "org.opencontainers.image.title=vigil"
	--label "org.opencontainers.image.description=Progressive-delivery controller with statistical canary analysis"
	--label "org.opencontainers.image.version=$version"
	--label "org.opencontainers.image.revision=$revision"
	--label "org.opencontainers.image.source=$source_url"
	--label "org.opencontainers.image.licenses=Apache-2.0"
)
buildah "${storage[@]}" config "${labels[@]}" \
	--user 65532:65532 \
	--workingdir / \
	--entrypoint '["/vigil"]' \
	--cmd '["controller"]' \
	--port 8080/tcp \
	"$container"
mkdir -p "$(dirname "$out")"
rm -f "$out"
buildah "${storage[@]}" commit --quiet --format oci --disable-compression=false "$container" \
	"oci-archive:$out:docker.io/library/vigil:$version" >/dev/null
echo "$out: vigil:$version ($profile, revision $revision), $(du -h "$out" | cut -f1)"
