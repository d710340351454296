#!/bin/sh
# Install libtelemetry.so.4 for C users:
#   <libdir>/libtelemetry.so.4.0.1, libtelemetry.so.4 -> it, libtelemetry.so -> libtelemetry.so.4
#   <prefix>/include/telemetry.h
#   <libdir>/pkgconfig/libtelemetry.pc   (from libtelemetry.pc.in)
#
# Usage: libtelemetry-ffi/install.sh [--prefix DIR] [--libdir DIR] [--destdir DIR] [--lib FILE]
#   --prefix   install prefix (default /usr/local)
#   --libdir   library directory (default <prefix>/lib)
#   --destdir  staging root prepended to every installed path (packaging)
#   --lib      the built library (default: target/release/libtelemetry.so, honouring
#              CARGO_TARGET_DIR; run `cargo build --release` first)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
prefix=/usr/local
libdir=
destdir=
lib="${CARGO_TARGET_DIR:-$here/../target}/release/libtelemetry.so"

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=$2; shift 2 ;;
        --prefix=*) prefix=${1#*=}; shift ;;
        --libdir) libdir=$2; shift 2 ;;
        --libdir=*) libdir=${1#*=}; shift ;;
        --destdir) destdir=$2; shift 2 ;;
        --destdir=*) destdir=${1#*=}; shift ;;
        --lib) lib=$2; shift 2 ;;
        --lib=*) lib=${1#*=}; shift ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[ -n "$libdir" ] || libdir=$prefix/lib

if [ ! -f "$lib" ]; then
    echo "install.sh: $lib not found; run 'cargo build --release' first or pass --lib" >&2
    exit 1
fi
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$here/../Cargo.toml" | head -n 1)

install -d "$destdir$libdir/pkgconfig" "$destdir$prefix/include"
install -m 0755 "$lib" "$destdir$libdir/libtelemetry.so.4.0.1"
ln -sfn libtelemetry.so.4.0.1 "$destdir$libdir/libtelemetry.so.4"
ln -sfn libtelemetry.so.4 "$destdir$libdir/libtelemetry.so"
install -m 0644 "$here/include/telemetry.h" "$destdir$prefix/include/telemetry.h"
# ${prefix} is kept literal in includedir, as in the C package's file.
sed -e "s|@prefix@|$prefix|" \
    -e "s|@libdir@|$libdir|" \
    -e 's|@includedir@|${prefix}/include|' \
    -e "s|@version@|$version|" \
    -e 's|@extra_libs@||' \
    "$here/libtelemetry.pc.in" > "$destdir$libdir/pkgconfig/libtelemetry.pc"
echo "installed libtelemetry.so.4 into $destdir$libdir"
