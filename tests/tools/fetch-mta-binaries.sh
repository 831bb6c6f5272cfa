#!/bin/sh
# Obtain Exim's and Sendmail's own binaries next to an installed Postfix.
#
# exim4-daemon-light and sendmail-bin conflict with postfix as Debian
# packages, so they are downloaded (`apt-get download`) and unpacked
# (`dpkg -x`) into CACHE, never installed. Libraries they need that the
# system lacks are unpacked there too. Also unpacked: sendmail-cf and m4, to
# build a real sendmail.cf with FEATURE(access_db).
#
# Usage: fetch-mta-binaries.sh CACHE
# Leaves CACHE/bin/{exim4,makemap,editmap,sendmail,m4}: wrappers that run the
# unpacked binaries with their libraries; makemap and editmap get
# `-C CACHE/etc/sendmail.cf`, which they read for TrustedUser, standing in
# for the /etc/mail/sendmail.cf a sendmail host has. As root, also creates
# the Debian-exim user that Exim's binary refuses to run without.
# Idempotent: a complete CACHE is reused. Needs apt's package lists.
set -eu

cache=${1:?usage: fetch-mta-binaries.sh CACHE}
packages="exim4-daemon-light sendmail-bin sendmail-cf m4"

fail() {
    echo "fetch-mta-binaries: $*" >&2
    exit 1
}

mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
root=$cache/root
libs=$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu

if [ ! -f "$cache/complete" ]; then
    command -v apt-get >/dev/null || fail "apt-get not found (Debian or Ubuntu needed)"
    downloads=$(mktemp -d "$cache/download.XXXXXX")
    trap 'rm -rf "$downloads"' EXIT
    # Libraries the binaries link against that the system lacks (libidn12 and
    # liblockfile1 on a Postfix host): unpacked beside them, not installed.
    missing=""
    for library in $(apt-cache depends --no-recommends --no-suggests exim4-daemon-light sendmail-bin \
        | sed -n 's/^ *Depends: \(lib[^ <>]*\)$/\1/p' | sort -u); do
        if ! dpkg-query -W -f '${Status}' "$library" 2>/dev/null | grep -q "ok installed"; then
            missing="$missing $library"
        fi
    done
    # shellcheck disable=SC2086 # word splitting wanted: a list of package names
    (cd "$downloads" && apt-get download $packages $missing) >"$downloads/apt.log" 2>&1 \
        || fail "apt-get download $packages$missing failed: $(tail -n 3 "$downloads/apt.log" | tr '\n' ' ')"
    rm -rf "$root"
    for deb in "$downloads"/*.deb; do
        dpkg -x "$deb" "$root"
    done
    touch "$cache/complete"
fi

mkdir -p "$cache/bin" "$cache/etc"
# makemap reads only TrustedUser from it; any syntactically valid cf will do.
printf 'V10/Berkeley\n' >"$cache/etc/sendmail.cf"

wrap() { # wrap NAME BINARY [OPTIONS]
    name=$1
    binary=$2
    shift 2
    [ -x "$binary" ] || fail "$binary missing from the unpacked packages"
    {
        echo '#!/bin/sh'
        echo "LD_LIBRARY_PATH='$libs'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
        echo 'export LD_LIBRARY_PATH'
        echo "exec '$binary' $* \"\$@\""
    } >"$cache/bin/$name"
    chmod 755 "$cache/bin/$name"
    unresolved=$(LD_LIBRARY_PATH=$libs ldd "$binary" | grep "not found" || true)
    [ -z "$unresolved" ] || fail "$binary: libraries not found: $unresolved"
}

wrap exim4 "$root/usr/sbin/exim4"
wrap sendmail "$root/usr/libexec/sendmail/sendmail"
wrap makemap "$root/usr/libexec/sendmail/makemap" -C "'$cache/etc/sendmail.cf'"
wrap editmap "$root/usr/libexec/sendmail/editmap" -C "'$cache/etc/sendmail.cf'"
wrap m4 "$root/usr/bin/m4"

if [ "$(id -u)" = 0 ] && ! getent passwd Debian-exim >/dev/null; then
    useradd --system --user-group --no-create-home --home-dir /var/spool/exim4 \
        --shell /usr/sbin/nologin Debian-exim
fi

echo "$cache/bin"
