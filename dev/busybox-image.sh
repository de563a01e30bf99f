#!/usr/bin/env bash
# Builds an OCI image layout tar of busybox from Debian's busybox-static: the
# test image and the README tour's image.
#
#   dev/busybox-image.sh OUT.tar [REF]     REF defaults to docker.io/library/busybox:latest
#
# One gzip layer: /bin/busybox with a symlink in /bin for each applet of
# `busybox --list`, /etc/passwd and /etc/group (root, nobody), an /etc/hosts
# placeholder, /tmp (1777) and /root. The config runs `sh` with a PATH. Every
# mtime is 0 and owners are 0:0, and gzip stores no name or time, so the same
# busybox binary always gives the same digests. The layout also carries a
# docker-archive manifest.json, so `docker load` takes it too.
#
# Needs: busybox-static (or BUSYBOX=/path/to/a/static/busybox), GNU tar,
# gzip, sha256sum.
set -euo pipefail

usage() { echo "usage: $0 OUT.tar [REF]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
out=$1
ref=${2:-docker.io/library/busybox:latest}
[[ $ref != *'"'* && $ref != *'\'* ]] || { echo "$0: bad reference $ref" >&2; exit 2; }

busybox=${BUSYBOX:-}
if [[ -z $busybox ]]; then
  for c in /bin/busybox /usr/bin/busybox; do
    if [[ -x $c ]]; then busybox=$c; break; fi
  done
fi
if [[ -z $busybox ]]; then
  echo "$0: no busybox found: install Debian's busybox-static (apt-get install busybox-static) or set BUSYBOX" >&2
  exit 1
fi
# A dynamically linked busybox would not run in an image without libc.
if ldd "$busybox" >/dev/null 2>&1; then
  echo "$0: $busybox is dynamically linked: install busybox-static (apt-get install busybox-static) or set BUSYBOX" >&2
  exit 1
fi

case "$(dpkg --print-architecture 2>/dev/null || uname -m)" in
  amd64 | x86_64) arch=amd64 variant= ;;
  arm64 | aarch64) arch=arm64 variant=v8 ;;
  armhf | armv7l) arch=arm variant=v7 ;;
  armel) arch=arm variant=v5 ;;
  i386 | i686) arch=386 variant= ;;
  ppc64el | ppc64le) arch=ppc64le variant= ;;
  riscv64) arch=riscv64 variant= ;;
  s390x) arch=s390x variant= ;;
  *) echo "$0: unknown architecture $(uname -m)" >&2; exit 1 ;;
esac

umask 022
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
case $out in /*) ;; *) out=$PWD/$out ;; esac

# The root filesystem.
root=$work/rootfs
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root"
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"
cp "$busybox" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [[ $applet == busybox || $applet == */* ]] && continue
  ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/hosts"

# Deterministic tars: sorted names, fixed times and owners, no atime/ctime.
dtar() { tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu "$@"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

layout=$work/layout
mkdir -p "$layout/blobs/sha256"
dtar -C "$root" -cf "$work/layer.tar" .
diff_id=$(sha "$work/layer.tar")
gzip -n -9 <"$work/layer.tar" >"$work/layer.tar.gz"
layer=$(sha "$work/layer.tar.gz")
layer_size=$(size "$work/layer.tar.gz")
mv "$work/layer.tar.gz" "$layout/blobs/sha256/$layer"

# The banner names the busybox build ("BusyBox v1.35.0 (Debian 1:1.35.0-4+b3) multi-call binary.").
banner=$("$busybox" 2>/dev/null | head -n1 | tr -d '"\\' || true)
platform_variant=
[[ -n $variant ]] && platform_variant=",\"variant\":\"$variant\""
printf '%s' "{\"architecture\":\"$arch\"$platform_variant,\"config\":{\"Cmd\":[\"sh\"],\"Env\":[\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"]},\"created\":\"1970-01-01T00:00:00Z\",\"history\":[{\"created\":\"1970-01-01T00:00:00Z\",\"created_by\":\"dev/busybox-image.sh: $banner\"}],\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$diff_id\"]}}" >"$work/config.json"
config=$(sha "$work/config.json")
config_size=$(size "$work/config.json")
mv "$work/config.json" "$layout/blobs/sha256/$config"

printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$config\",\"size\":$config_size},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$layer\",\"size\":$layer_size}]}" >"$work/manifest"
manifest=$(sha "$work/manifest")
manifest_size=$(size "$work/manifest")
mv "$work/manifest" "$layout/blobs/sha256/$manifest"

printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$manifest\",\"size\":$manifest_size,\"annotations\":{\"io.containerd.image.name\":\"$ref\",\"org.opencontainers.image.ref.name\":\"$ref\"},\"platform\":{\"architecture\":\"$arch\",\"os\":\"linux\"$platform_variant}}]}" >"$layout/index.json"
printf '%s' "[{\"Config\":\"blobs/sha256/$config\",\"RepoTags\":[\"$ref\"],\"Layers\":[\"blobs/sha256/$layer\"]}]" >"$layout/manifest.json"

dtar -C "$layout" -cf "$out.tmp.$$" oci-layout index.json manifest.json blobs
mv "$out.tmp.$$" "$out"
echo "$0: wrote $out: $ref sha256:$manifest" >&2
