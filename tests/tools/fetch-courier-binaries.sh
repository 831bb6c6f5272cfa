#!/bin/sh
# Obtain Courier's own makesmtpaccess, makedat and makedatprog next to an installed Postfix.
#
# courier-mta conflicts with postfix (mail-transport-agent), so courier-base
# and courier-mta are downloaded (`apt-get download`) and unpacked
# (`dpkg -x`) into CACHE, never installed. makedatprog needs only libgdbm,
# which Postfix's host has.
#
# makesmtpaccess takes no arguments: it sources ${sysconfdir}/esmtpd for
# ACCESSFILE (the smtpaccess directory), runs ${bindir}/makedat to build
# ACCESSFILE.dat, then `couriertcpd -restart` to signal the running daemon.
# The copy made here is Courier's own script with three paths changed:
# sysconfdir comes from $COURIER_SYSCONFDIR (a test's own esmtpd), bindir is
# the unpacked makedat (itself with makedatprog's path changed), and
# couriertcpd is a stub (no daemon runs to be signalled).
#
# Usage: fetch-courier-binaries.sh CACHE
# Prints CACHE/bin, which holds makesmtpaccess. Idempotent. Needs apt's lists.
set -eu

cache=${1:?usage: fetch-courier-binaries.sh CACHE}
fail() {
    echo "fetch-courier-binaries: $*" >&2
    exit 1
}

mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
root=$cache/root

if [ ! -f "$cache/complete" ]; then
    command -v apt-get >/dev/null || fail "apt-get not found (Debian or Ubuntu needed)"
    downloads=$(mktemp -d "$cache/download.XXXXXX")
    trap 'rm -rf "$downloads"' EXIT
    (cd "$downloads" && apt-get download courier-base courier-mta) >"$downloads/apt.log" 2>&1 \
        || fail "apt-get download courier-base courier-mta failed: $(tail -n 3 "$downloads/apt.log" | tr '\n' ' ')"
    rm -rf "$root"
    for deb in "$downloads"/*.deb; do
        dpkg -x "$deb" "$root"
    done
    touch "$cache/complete"
fi

for file in usr/lib/courier/makesmtpaccess usr/lib/courier/makedat usr/lib/courier/courier/makedatprog; do
    [ -f "$root/$file" ] || fail "$file missing from the unpacked packages"
done
unresolved=$(ldd "$root/usr/lib/courier/courier/makedatprog" | grep "not found" || true)
[ -z "$unresolved" ] || fail "makedatprog: libraries not found: $unresolved"

bin=$cache/bin
tools=$cache/tools
mkdir -p "$bin" "$tools"
sed "s|/usr/lib/courier/courier/makedatprog|$root/usr/lib/courier/courier/makedatprog|" \
    "$root/usr/lib/courier/makedat" >"$tools/makedat"
printf '#!/bin/sh\nexit 0\n' >"$tools/couriertcpd"
sed -e 's|^sysconfdir=.*|sysconfdir="${COURIER_SYSCONFDIR:?}"|' \
    -e "s|^bindir=.*|bindir=\"$tools\"|" \
    -e "s|^sbindir=.*|sbindir=\"$tools\"|" \
    "$root/usr/lib/courier/makesmtpaccess" >"$bin/makesmtpaccess"
chmod 755 "$tools/makedat" "$tools/couriertcpd" "$bin/makesmtpaccess"
grep -q "COURIER_SYSCONFDIR" "$bin/makesmtpaccess" || fail "makesmtpaccess: sysconfdir not found to change"
echo "$bin"
