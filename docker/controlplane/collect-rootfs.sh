#!/bin/sh
# Runs inside the Dockerfile's base stage: copies the given programs and every shared library
# `ldd` lists for them (the dynamic loader included) to the same paths under ROOT, plus the CA
# bundle and minimal account files, so the final stage can start FROM scratch with only these.
# Usage: collect-rootfs ROOT PROGRAM...
set -eu
root="$1"
shift
mkdir -p "$root/tmp" "$root/etc/ssl/certs" "$root/var/lib/clawker" "$root/etc/clawker/trust"
chmod 1777 "$root/tmp"
chmod 0700 "$root/var/lib/clawker" "$root/etc/clawker/trust"
for program in "$@"; do
  cp -L --parents "$program" "$root/"
  # ldd prints "name => /path (addr)" or "/path (addr)"; a static program prints nothing usable.
  for lib in $(ldd "$program" 2>/dev/null | sed -n -e 's/.*=> \(\/[^ ]*\).*/\1/p' -e 's/^[[:space:]]*\(\/[^ ]*\) (.*/\1/p'); do
    [ -e "$root$lib" ] || cp -L --parents "$lib" "$root/"
  done
done
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nhaproxy:x:101:101:haproxy:/nonexistent:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nhaproxy:x:101:\nnogroup:x:65534:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
