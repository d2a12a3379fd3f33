#!/usr/bin/env bash
# packaging/test/image.sh — check the hub image `make image` wrote: a valid
# OCI layout in a tar whose blobs match their digests, a config that runs the
# hub binary as a non-root user, and a layer holding the stamped binary, the
# plugins, the CA bundle and the state folder owned by that user. .ci/run
# calls it; it needs tar, jq and sha256sum, and no container runtime.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

fail() {
	echo "FAIL: $*" >&2
	exit 1
}
check() { printf '  ok  %s\n' "$*"; }

m=(dist/plantsync-hub-*.oci.tar)
((${#m[@]} == 1)) && [[ -f ${m[0]} ]] || fail "want exactly one dist/plantsync-hub-*.oci.tar, found: ${m[*]}"
image=${m[0]}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "--- $image"
tar -xf "$image" -C "$tmp"
[[ $(jq -r .imageLayoutVersion "$tmp/oci-layout") == 1.0.0 ]] || fail "no oci-layout 1.0.0"
for b in "$tmp"/blobs/sha256/*; do
	[[ $(sha256sum "$b" | cut -d' ' -f1) == "$(basename "$b")" ]] || fail "blob $(basename "$b") does not match its digest"
done
check "OCI layout; every blob matches its digest"

blob() { printf '%s/blobs/sha256/%s\n' "$tmp" "${1#sha256:}"; }
[[ $(jq '.manifests | length' "$tmp/index.json") == 1 ]] || fail "want one manifest in index.json"
ref=$(jq -r '.manifests[0].annotations["org.opencontainers.image.ref.name"]' "$tmp/index.json")
manifest=$(blob "$(jq -r '.manifests[0].digest' "$tmp/index.json")")
[[ $(jq -r .mediaType "$manifest") == application/vnd.oci.image.manifest.v1+json ]] || fail "not an OCI manifest"
config=$(blob "$(jq -r .config.digest "$manifest")")
[[ $(jq '.layers | length' "$manifest") == 1 ]] || fail "want one layer (FROM scratch plus one)"
layer=$(blob "$(jq -r '.layers[0].digest' "$manifest")")
check "one manifest ($ref), one layer"

want_arch=$(go env GOARCH)
jq -e --arg arch "$want_arch" '
	.os == "linux" and .architecture == $arch and
	.config.User == "65532:65532" and
	.config.Entrypoint == ["/usr/bin/plantsync-hub"] and
	.config.Cmd == ["run", "-config", "/etc/plantsync-hub/hub.yaml"] and
	(.config.Volumes | has("/var/lib/plantsync-hub")) and
	(.rootfs.diff_ids | length) == 1' "$config" >/dev/null ||
	{ jq . "$config" >&2; fail "image config"; }
check "config: linux/$want_arch, user 65532:65532, entrypoint /usr/bin/plantsync-hub run -config ..."
if grep -Eiq 'docker\.io|gcr\.io|quay\.io|ghcr\.io|registry\.' "$tmp/index.json" "$manifest" "$config" packaging/container/Dockerfile; then
	fail "a registry is named"
fi
[[ $(grep -m1 '^FROM' packaging/container/Dockerfile) == "FROM scratch" ]] || fail "Dockerfile is not FROM scratch"
check "no registry named; Dockerfile FROM scratch"

listing=$(tar -tzvf "$layer")
has() { # has MODE OWNER PATH
	grep -Eq "^$1 $2 .* $3\$" <<<"$listing" || { echo "$listing" >&2; fail "layer: no $3 ($1 $2)"; }
}
has '-rwxr-xr-x' '0/0' 'usr/bin/plantsync-hub'
has '-rw-r--r--' '0/0' 'etc/ssl/certs/ca-certificates.crt'
has '-rw-r--r--' '0/0' 'etc/passwd'
has '-rw-r--r--' '0/0' 'etc/plantsync-hub/hub.yaml'
has 'drwx------' '65532/65532' 'var/lib/plantsync-hub/'
has 'drwxrwxrwt' '0/0' 'tmp/'
has 'drwxr-xr-x' '0/0' 'usr/lib/plantsync-hub/plugins/'
n=0
for f in bin/plugins/*; do
	[[ -f $f && $(basename "$f") != *filedrop* ]] || continue
	has '-rwxr-xr-x' '0/0' "usr/lib/plantsync-hub/plugins/$(basename "$f")"
	n=$((n + 1))
done
check "layer: binary, CA bundle, passwd, config, $n plugin(s), state folder owned by 65532, /tmp"

mkdir "$tmp/rootfs"
tar -xzf "$layer" -C "$tmp/rootfs"
cmp -s "$tmp/rootfs/etc/ssl/certs/ca-certificates.crt" /etc/ssl/certs/ca-certificates.crt || fail "CA bundle differs from the build machine's"
grep -q '^plantsync-hub:x:65532:65532:' "$tmp/rootfs/etc/passwd" || fail "passwd does not name uid 65532"
got=$("$tmp/rootfs/usr/bin/plantsync-hub" version)
[[ $got == "$(bin/plantsync-hub version)" ]] || fail "image binary says '$got'"
for f in bin/plugins/*; do
	[[ -f $f && $(basename "$f") != *filedrop* ]] || continue
	cmp -s "$f" "$tmp/rootfs/usr/lib/plantsync-hub/plugins/$(basename "$f")" || fail "plugin $(basename "$f") differs"
	grep -q "sha256: $(sha256sum "$f" | cut -d' ' -f1)" "$tmp/rootfs/etc/plantsync-hub/hub.yaml" || fail "checksum of $(basename "$f") not in the image's hub.yaml"
done
check "CA bundle is Debian's; binary: $got"

[[ -f dist/image-context/Dockerfile && -x dist/image-context/rootfs/usr/bin/plantsync-hub && -d dist/image-context/state ]] ||
	fail "dist/image-context/ incomplete"
check "docker build context in dist/image-context/"
printf '\nimage checks passed\n'
