#!/bin/sh
# Obtain Exim's and Sendmail's own binaries next to an installed Postfix.
#
# exim4-daemon-light and sendmail-bin conflict with postfix as Debian
# packages, so they are downloaded (`apt-get download`) and unpacked
# (`dpkg -x`) into CACHE, never installed. Libraries they need that the
# system lacks are unpacked there too. Also unpacked: sendmail-cf and m4, to
# build a real sendmail.cf with FEATURE(access_db).
#
# exim4-daemon-heavy (Exim with its pgsql lookup) is unpacked into a root of
# its own, since it ships the same /usr/sbin/exim4 as the light daemon.
#
# Usage: fetch-mta-binaries.sh CACHE
# Leaves CACHE/bin/{exim4,exim4-heavy,makemap,editmap,sendmail,m4}: wrappers that run the
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

binaries="usr/sbin/exim4 usr/libexec/sendmail/sendmail usr/libexec/sendmail/makemap
    usr/libexec/sendmail/editmap usr/bin/m4"

unresolved() { # the libraries an unpacked binary cannot find, or "missing BINARY"
    for binary in $binaries; do
        if [ -x "$root/$binary" ]; then
            LD_LIBRARY_PATH=$libs ldd "$root/$binary" | grep "not found" || true
        else
            echo "missing $binary"
        fi
    done
}

# Libraries the binaries link against that the system lacks, their own
# dependencies included (libidn12 and liblockfile1 on a Debian 12 Postfix
# host; on Debian 13 also libunbound8, which GnuTLS's DANE library needs):
# apt's own resolver names them in a simulated install (-s changes nothing),
# and they are unpacked beside the binaries, not installed.
missing_libraries() {
    found=""
    for package in exim4-daemon-light sendmail-bin; do
        simulated=$(apt-get -s -q install --no-install-recommends "$package" 2>&1) \
            || fail "apt-get -s install $package failed: $(echo "$simulated" | tail -n 3 | tr '\n' ' ')"
        found="$found $(echo "$simulated" | sed -n 's/^Inst \(lib[^ ]*\) .*/\1/p')"
    done
    # shellcheck disable=SC2086 # word splitting wanted: a list of package names
    printf '%s\n' $found | sort -u | tr '\n' ' '
}

# A cache is reused while every binary finds its libraries; one made before
# the system changed (a release upgrade, packages removed) is made afresh.
if [ ! -f "$cache/complete" ] || [ -n "$(unresolved)" ]; then
    command -v apt-get >/dev/null || fail "apt-get not found (Debian or Ubuntu needed)"
    missing=$(missing_libraries) # set -e: a failure in there stops the script
    downloads=$(mktemp -d "$cache/download.XXXXXX")
    trap 'rm -rf "$downloads"' EXIT
    # shellcheck disable=SC2086 # word splitting wanted: a list of package names
    (cd "$downloads" && apt-get download $packages $missing) >"$downloads/apt.log" 2>&1 \
        || fail "apt-get download $packages $missing failed: $(tail -n 3 "$downloads/apt.log" | tr '\n' ' ')"
    rm -f "$cache/complete"
    rm -rf "$root"
    for deb in "$downloads"/*.deb; do
        dpkg -x "$deb" "$root"
    done
    touch "$cache/complete"
fi

heavy=$cache/root-heavy
if [ ! -f "$cache/complete-heavy" ]; then
    downloads=$(mktemp -d "$cache/download.XXXXXX")
    trap 'rm -rf "$downloads"' EXIT
    missing=""
    for library in $(apt-cache depends --no-recommends --no-suggests exim4-daemon-heavy \
        | sed -n 's/^ *Depends: \(lib[^ <>]*\)$/\1/p' | sort -u); do
        if ! dpkg-query -W -f '${Status}' "$library" 2>/dev/null | grep -q "ok installed"; then
            missing="$missing $library"
        fi
    done
    # shellcheck disable=SC2086 # word splitting wanted: a list of package names
    (cd "$downloads" && apt-get download exim4-daemon-heavy $missing) >"$downloads/apt.log" 2>&1 \
        || fail "apt-get download exim4-daemon-heavy$missing failed: $(tail -n 3 "$downloads/apt.log" | tr '\n' ' ')"
    rm -rf "$heavy"
    for deb in "$downloads"/*.deb; do
        dpkg -x "$deb" "$heavy"
    done
    touch "$cache/complete-heavy"
fi

mkdir -p "$cache/bin" "$cache/etc"
# makemap reads only TrustedUser from it; any syntactically valid cf will do.
printf 'V10/Berkeley\n' >"$cache/etc/sendmail.cf"

wrap() { # wrap NAME BINARY [OPTIONS]
    name=$1
    binary=$2
    shift 2
    [ -x "$binary" ] || fail "$binary missing from the unpacked packages"
    # sendmail is set-group-id (mail), so the loader would ignore
    # LD_LIBRARY_PATH in it (secure mode) and miss the unpacked libraries;
    # the tests run these copies as root and need neither bit.
    chmod ug-s "$binary"
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
# libspf2 sits in /usr/lib, not in the multiarch directory.
libs=$heavy/usr/lib/x86_64-linux-gnu:$heavy/lib/x86_64-linux-gnu:$heavy/usr/lib:$libs
wrap exim4-heavy "$heavy/usr/sbin/exim4"

if [ "$(id -u)" = 0 ] && ! getent passwd Debian-exim >/dev/null; then
    useradd --system --user-group --no-create-home --home-dir /var/spool/exim4 \
        --shell /usr/sbin/nologin Debian-exim
fi

echo "$cache/bin"
