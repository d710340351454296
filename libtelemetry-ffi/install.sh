#!/bin/sh
# Install libtelemetry.so.4 for C users:
#   <libdir>/libtelemetry.so.4.0.1, libtelemetry.so.4 -> it, libtelemetry.so -> libtelemetry.so.4
#   <prefix>/include/telemetry.h
#   <libdir>/pkgconfig/libtelemetry.pc   (from libtelemetry.pc.in)
#
# Usage: libtelemetry-ffi/install.sh [--prefix DIR] [--libdir DIR] [--destdir DIR] [--lib FILE]
#        libtelemetry-ffi/install.sh --stage DIR
#   --prefix   install prefix (default /usr/local)
#   --libdir   library directory (default <prefix>/lib)
#   --destdir  staging root prepended to every installed path (packaging)
#   --lib      the built libtelemetry.a, or a built libtelemetry.so with libtelemetry.a
#              beside it (default: target/release/libtelemetry.a, honouring
#              CARGO_TARGET_DIR; `cargo build --release` builds both)
#   --stage    install nothing: link DIR/libtelemetry.a into DIR/libtelemetry.so.4.0.1 and
#              point DIR/libtelemetry.so.4 at it (for the build output, e.g.
#              target/release; run again after each build)
# Environment: CC (default cc), LDFLAGS (added to the link).
#
# The shared object is linked here, by the C compiler with GNU ld, from the crate's
# staticlib and telemetry.sym, so that each version node records its parent (TM_2_0_0
# inherits TM_1_0_0, ...) as in the C library; the cdylib rust-lld links for `cargo build`
# has the same names and nodes but no parents.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
prefix=/usr/local
libdir=
destdir=
stage=
lib="${CARGO_TARGET_DIR:-$here/../target}/release/libtelemetry.a"

# What the Rust standard library needs from the system: the output of
# `cargo rustc -p libtelemetry-ffi --lib -- --print native-static-libs`.
# tests/cabi/installed.rs fails if rustc's list changes; --no-undefined below fails the
# link if a dependency ever needs more.
native_libs="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"

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
        --stage) stage=$2; shift 2 ;;
        --stage=*) stage=${1#*=}; shift ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[ -n "$libdir" ] || libdir=$prefix/lib
[ -z "$stage" ] || lib=$stage/libtelemetry.a

# A libtelemetry.so from cargo stands for the libtelemetry.a built beside it.
case "$lib" in
    *.a) staticlib=$lib ;;
    *) staticlib=$(dirname "$lib")/libtelemetry.a ;;
esac
if [ ! -f "$staticlib" ]; then
    echo "install.sh: $staticlib not found; run 'cargo build --release' first or pass --lib" >&2
    exit 1
fi

# link_library OUTPUT: link $staticlib into OUTPUT (through a temp file, so an interrupted
# link never leaves a broken library in place). --whole-archive keeps the tm_* entry points
# (nothing references them); the version script exports exactly those, each under its node,
# and hides the rest, which --gc-sections then drops. --strip-debug matches cargo's release
# cdylib (the staticlib carries the standard library's debug info).
link_library() {
    tmp="$(dirname "$1")/.$(basename "$1").$$"
    # shellcheck disable=SC2086 # native_libs and LDFLAGS are word lists.
    if ! ${CC:-cc} -shared -fuse-ld=bfd -o "$tmp" \
        -Wl,-soname,libtelemetry.so.4 \
        -Wl,--version-script="$here/telemetry.sym" \
        -Wl,--whole-archive "$staticlib" -Wl,--no-whole-archive \
        -Wl,--as-needed $native_libs \
        -Wl,--no-undefined -Wl,--gc-sections -Wl,-z,relro,-z,now -Wl,--strip-debug \
        ${LDFLAGS:-}; then
        rm -f "$tmp"
        echo "install.sh: linking $staticlib failed" >&2
        exit 1
    fi
    chmod 0755 "$tmp"
    mv -f "$tmp" "$1"
}

if [ -n "$stage" ]; then
    link_library "$stage/libtelemetry.so.4.0.1"
    ln -sfn libtelemetry.so.4.0.1 "$stage/libtelemetry.so.4"
    echo "linked $stage/libtelemetry.so.4.0.1"
    exit 0
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$here/../Cargo.toml" | head -n 1)

install -d "$destdir$libdir/pkgconfig" "$destdir$prefix/include"
link_library "$destdir$libdir/libtelemetry.so.4.0.1"
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
