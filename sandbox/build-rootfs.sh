#!/usr/bin/env bash
# build-rootfs.sh [--force] [OUT_DIR]
#
# Builds the minimal, read-only-able Python root filesystem that batos runs
# LLM-written tools in (under gVisor/runsc; see sandbox/README.md).
#
#   OUT_DIR defaults to ${BATOS_SANDBOX_ROOTFS:-$HOME/.cache/batos/sandbox/rootfs}
#
# Contents: Debian's /usr/bin/python3.11 (+ python3 symlink), the shared
# libraries ldd lists for it and for the kept extension modules (with the
# dynamic loader), /usr/lib/python3.11 without test/, idlelib, tkinter,
# turtledemo, ensurepip, lib2to3, config-3.11-*, test extension modules;
# empty /tmp /proc /dev; /etc/passwd + /etc/group with uid/gid 1000 "tool";
# the in-sandbox runner at /opt/batos/runner.py. No shell, nothing from /root,
# no host /etc files.
#
# Idempotent: if OUT_DIR/.batos-stamp records the same input hash and the tree
# still matches its content hash, nothing is rebuilt. Otherwise the new tree
# is built next to OUT_DIR and swapped in with two renames.
#
# Stamp file OUT_DIR/.batos-stamp (key=value lines; not part of the hash):
#   stamp=<sha256 over the tree: paths, types, modes, symlink targets, file bytes>
#   inputs=<sha256 over this script, runner.py, the python binary, package versions>
#   runner_sha256=<sha256 of opt/batos/runner.py>
#   python_version=<x.y.z>   built_at=<UTC ISO time>   size_bytes=<n>
# The last stdout line is "stamp=<hash>".
#
# Exit status: 0 ok, 1 build failure, 2 usage / missing host prerequisites.
set -euo pipefail

PROG="build-rootfs"
say() { printf '[%s] %s\n' "$PROG" "$*"; }
die() { printf '[%s] ERROR: %s\n' "$PROG" "$1" >&2; exit "${2:-1}"; }

FORCE=0
OUT=""
for a in "$@"; do
    case "$a" in
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        -*) die "unknown option $a (usage: build-rootfs.sh [--force] [OUT_DIR])" 2 ;;
        *) [ -z "$OUT" ] || die "only one OUT_DIR allowed" 2; OUT="$a" ;;
    esac
done
[ -n "$OUT" ] || OUT="${BATOS_SANDBOX_ROOTFS:-${HOME:?HOME not set}/.cache/batos/sandbox/rootfs}"
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
OUT="${OUT%/}"
[ "$OUT" != "" ] && [ "$OUT" != "/" ] || die "refusing to use / as OUT_DIR" 2

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUNNER="$HERE/runner.py"
PY=/usr/bin/python3.11
PYVER=3.11
STDLIB=/usr/lib/python$PYVER
STAMP_NAME=.batos-stamp

# Extension modules we do not ship (tests, terminals, deprecated/unused C deps).
DROP_EXT_RE='^(_test.*|_ctypes_test|_xxtestfuzz|_xxsubinterpreters|xxlimited.*|nis|readline|_curses|_curses_panel|ossaudiodev|_dbm)\.cpython-'
# stdlib directories we do not ship
DROP_DIRS=(test idlelib tkinter turtledemo ensurepip lib2to3 "config-$PYVER-*" __phello__)

# ---------------------------------------------------------------- 1 preflight
say "1/7 preflight: checking host python $PY"
if [ ! -e "$PY" ]; then
    die "$PY not found. Install Debian's interpreter: apt-get install python3.11-minimal (or: apt-get install python3, which pulls in python3.11 and its full stdlib)" 2
fi
if ! head -c 4 "$PY" | grep -q 'ELF'; then
    die "$PY is not an ELF binary (a pyenv/asdf shim?). batos needs Debian's python: apt-get install python3.11-minimal" 2
fi
for f in os.py json/__init__.py encodings/__init__.py ast.py traceback.py lib-dynload; do
    [ -e "$STDLIB/$f" ] || die "$STDLIB/$f missing: the full standard library is needed. apt-get install libpython3.11-stdlib (pulled in by: apt-get install python3.11 or python3)" 2
done
[ -f "$RUNNER" ] || die "runner not found at $RUNNER" 2
for tool in ldd sha256sum readlink find sort tar du; do
    command -v "$tool" >/dev/null || die "required host tool '$tool' not found" 2
done
PYFULL="$("$PY" -I -S -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')" \
    || die "$PY does not run" 1

pkgver() { dpkg-query -W -f='${Package}=${Version}\n' "$@" 2>/dev/null || true; }
INPUTS="$( {
    echo "format=1"
    sha256sum "$HERE/build-rootfs.sh" "$RUNNER" "$PY" | awk '{print $1}'
    pkgver python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 zlib1g libexpat1 \
        libffi8 libssl3 libsqlite3-0 liblzma5 libbz2-1.0 libmpdec3 libuuid1 libcrypt1
} | sha256sum | awk '{print $1}')"

# content hash of a tree (stamp file excluded). Mtimes/owners are NOT hashed, so
# identical inputs give the identical stamp.
tree_hash() {
    ( cd "$1" && {
        find . -path "./$STAMP_NAME" -prune -o -printf '%y %m %p -> %l\n' | LC_ALL=C sort
        find . -type f ! -path "./$STAMP_NAME" -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum
      } | sha256sum | awk '{print $1}' )
}
stamp_get() { sed -n "s/^$2=//p" "$1/$STAMP_NAME" 2>/dev/null | head -n1; }

if [ "$FORCE" = 0 ] && [ -f "$OUT/$STAMP_NAME" ]; then
    old_inputs="$(stamp_get "$OUT" inputs)"
    old_stamp="$(stamp_get "$OUT" stamp)"
    if [ "$old_inputs" = "$INPUTS" ]; then
        say "2/7 up-to-date check: inputs unchanged, verifying tree hash"
        if [ "$(tree_hash "$OUT")" = "$old_stamp" ]; then
            say "up to date: $OUT ($(( $(stamp_get "$OUT" size_bytes) / 1048576 )) MB)"
            echo "stamp=$old_stamp"
            exit 0
        fi
        say "tree was modified since it was built; rebuilding"
    else
        say "2/7 up-to-date check: inputs changed; rebuilding"
    fi
else
    say "2/7 up-to-date check: no usable stamp; building"
fi

if [ -e "$OUT" ] && [ ! -f "$OUT/$STAMP_NAME" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
    die "$OUT exists, is not empty and has no $STAMP_NAME: not replacing something this script did not build" 2
fi

mkdir -p "$(dirname "$OUT")"
TMP="$(mktemp -d "$OUT.tmp.XXXXXX")"
cleanup() { if [ -n "${TMP:-}" ]; then rm -rf -- "$TMP"; fi; }
trap cleanup EXIT
chmod 0755 "$TMP"
R="$TMP"

# ---------------------------------------------------------------- 3 skeleton
say "3/7 skeleton: /usr/bin /etc /tmp /proc /dev /opt/batos"
mkdir -p "$R/usr/bin" "$R/usr/lib" "$R/etc" "$R/proc" "$R/dev" "$R/opt/batos"
install -d -m 1777 "$R/tmp"
# Reproduce merged-/usr top-level links (/lib -> usr/lib, /lib64 -> usr/lib64,
# /bin -> usr/bin) exactly as the host has them, so ldd paths resolve.
for top in lib lib64 bin; do
    if [ -L "/$top" ]; then
        t="$(readlink "/$top")"
        ln -s "$t" "$R/$top"
        case "$t" in /*) mkdir -p "$R$t" ;; *) mkdir -p "$R/$t" ;; esac
    fi
done

# copy_path HOSTPATH: recreate HOSTPATH in the rootfs, including every symlink
# along the way (each stored with its original target text), then the file.
copy_path() {
    local p="$1" hops=0 target dir
    while [ -L "$p" ]; do
        hops=$((hops + 1)); [ "$hops" -lt 40 ] || die "symlink loop at $1"
        target="$(readlink "$p")"
        dir="$(dirname "$p")"
        mkdir -p "$R$dir"
        [ -e "$R$p" ] || [ -L "$R$p" ] || ln -s "$target" "$R$p"
        case "$target" in /*) p="$target" ;; *) p="$dir/$target" ;; esac
    done
    [ -f "$p" ] || die "cannot copy $1 (resolved to $p): not a regular file"
    mkdir -p "$R$(dirname "$p")"
    [ -e "$R$p" ] || cp -p "$p" "$R$p"
}

# ---------------------------------------------------------------- 4 python + stdlib
say "4/7 python: $PY ($PYFULL) + $STDLIB (without ${DROP_DIRS[*]})"
copy_path "$PY"
ln -s "python$PYVER" "$R/usr/bin/python3"
excl=()
for d in "${DROP_DIRS[@]}"; do excl+=("--exclude=python$PYVER/$d"); done
tar -C /usr/lib -cf - "${excl[@]}" "python$PYVER" | tar -C "$R/usr/lib" -xpf -
find "$R$STDLIB/lib-dynload" -maxdepth 1 -name '*.so' -printf '%f\n' \
    | { grep -E "$DROP_EXT_RE" || true; } \
    | while read -r so; do rm -f -- "$R$STDLIB/lib-dynload/$so"; done
# Debian's sitecustomize.py is an absolute link into host /etc: drop it. Any
# other absolute symlink inside the stdlib is rewritten to point inside the tree.
rm -f "$R$STDLIB/sitecustomize.py"
while IFS= read -r -d '' l; do
    t="$(readlink "$l")"
    if [ -e "$R$t" ]; then
        ln -sfn "$(realpath -m --relative-to="$(dirname "$l")" "$R$t")" "$l"
    else
        say "    dropping dangling absolute link ${l#"$R"} -> $t"
        rm -f "$l"
    fi
done < <(find "$R$STDLIB" -type l -lname '/*' -print0)

# ---------------------------------------------------------------- 5 shared libraries
say "5/7 libraries: ldd of python + kept extension modules (with the loader)"
libs="$( { ldd "$PY"; for so in "$R$STDLIB"/lib-dynload/*.so; do ldd "$so"; done; } \
    | awk '/=>/ && $3 ~ /^\// {print $3} !/=>/ && $1 ~ /^\// {print $1}' | LC_ALL=C sort -u)"
[ -n "$libs" ] || die "ldd listed no libraries for $PY"
interp="$(ldd "$PY" | awk '!/=>/ && $1 ~ /^\// {print $1}' | head -n1)"
[ -n "$interp" ] || die "could not find the dynamic loader in ldd output"
nlibs=0
for l in $libs; do
    case "$l" in /root/*|/home/*) die "refusing to copy library from $l" ;; esac
    copy_path "$l"; nlibs=$((nlibs + 1))
done
say "    $nlibs libraries, loader $interp"

# ---------------------------------------------------------------- 6 etc + runner
say "6/7 etc + runner: passwd/group (tool = 1000:1000), /opt/batos/runner.py"
cat > "$R/etc/passwd" <<'EOF'
root:x:0:0:root:/nonexistent:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
tool:x:1000:1000:batos tool:/tmp:/usr/sbin/nologin
EOF
cat > "$R/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
tool:x:1000:
EOF
install -m 0644 "$RUNNER" "$R/opt/batos/runner.py"
chmod 0644 "$R/etc/passwd" "$R/etc/group"
# everything readable (and directories searchable) by uid 1000, writable by nobody but root
chmod -R u+rwX,go+rX,go-w "$R"
chmod 1777 "$R/tmp"

# sanity: no shell, no host secrets
for bad in usr/bin/sh usr/bin/bash usr/bin/dash bin/sh bin/bash etc/shadow etc/gshadow root home; do
    if [ -e "$R/$bad" ]; then die "unexpected /$bad in rootfs"; fi
done
[ -z "$(find "$R" -type l -lname '/root*' -print -quit)" ] || die "symlink into /root in rootfs"

# smoke test (root only: chroot)
if [ "$(id -u)" = 0 ] && command -v chroot >/dev/null; then
    out="$(printf '%s' '{"mode":"check","source":"def f(x):\n    return x\n","function":"f"}' \
        | chroot --userspec=1000:1000 "$R" /usr/bin/python3 -I -S /opt/batos/runner.py 2>&1)" \
        || die "smoke test failed: $out"
    [ "$out" = '{"ok": true}' ] || die "smoke test: unexpected runner output: $out"
    say "    smoke test (chroot, uid 1000): runner answered $out"
fi

# ---------------------------------------------------------------- 7 stamp + swap
say "7/7 stamp: hashing tree"
STAMP="$(tree_hash "$R")"
SIZE="$(du -sb "$R" | awk '{print $1}')"
{
    echo "stamp=$STAMP"
    echo "inputs=$INPUTS"
    echo "runner_sha256=$(sha256sum "$R/opt/batos/runner.py" | awk '{print $1}')"
    echo "python_version=$PYFULL"
    echo "built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "size_bytes=$SIZE"
} > "$R/$STAMP_NAME"
chmod 0644 "$R/$STAMP_NAME"
MB=$((SIZE / 1048576))
if [ "$MB" -lt 20 ] || [ "$MB" -gt 200 ]; then
    say "    WARNING: rootfs is $MB MB (expected about 40-70 MB)"
fi

if [ -e "$OUT" ]; then
    OLD="$(mktemp -d "$OUT.old.XXXXXX")"
    rmdir "$OLD"
    mv -T "$OUT" "$OLD"
    mv -T "$TMP" "$OUT"
    TMP=""
    rm -rf -- "$OLD"
else
    mv -T "$TMP" "$OUT"
    TMP=""
fi
say "done: $OUT ($MB MB, $(find "$OUT" -type f | wc -l) files)"
echo "stamp=$STAMP"
