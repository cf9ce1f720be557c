#!/usr/bin/env bash
# Install Triton's load generator, perf_analyzer, from PyPI into DIR, for a clone of dagserve.
#
#   bash examples/get_perf_analyzer.sh [DIR]     # default DIR: ~/.cache/dagserve-peers
#   DIR/bin/perf_analyzer -m add_mul -u 127.0.0.1:8001 -i grpc --shape INPUT0:16
#
# perf_analyzer 2.51 is the binary inside the tritonclient 2.51.0 wheel (later wheels ship none, or
# need a newer glibc than Debian 12's); it links libb64 and libcudart 12 (no GPU is used), which the
# nvidia-pytriton 0.7.0 wheel carries. Both wheels are downloaded without installing anything (about
# 70 MB, kept in DIR/dl), the three files are unpacked into DIR/lib and DIR/bin/perf_analyzer is a wrapper that
# finds them. tests/server/test_peers.py uses the same default DIR. Needs python3 with pip.
set -euo pipefail
DIR=${1:-$HOME/.cache/dagserve-peers}
PY=${PYTHON:-python3}
mkdir -p "$DIR/bin" "$DIR/lib" "$DIR/dl"
DIR=$(cd "$DIR" && pwd)

if [ ! -x "$DIR/lib/perf_analyzer" ] || [ ! -e "$DIR/lib/libb64.so.0d" ] || [ ! -e "$DIR/lib/libcudart.so.12" ]; then
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$DIR/dl" \
        "tritonclient==2.51.0" "nvidia-pytriton==0.7.0"
    "$PY" - "$DIR" <<'PYEOF'
import glob, os, re, sys, zipfile

out = sys.argv[1]
wanted = {  # file in DIR/lib -> pattern of its path inside a wheel
    "perf_analyzer": r"(^|/)bin/perf_analyzer$",
    "libb64.so.0d": r"nvidia_pytriton\.libs/libb64-[^/]*\.so\.0d$",
    "libcudart.so.12": r"nvidia_pytriton\.libs/libcudart-[^/]*\.so\.12[^/]*$",
}
found = {}
for wheel in sorted(glob.glob(os.path.join(out, "dl", "*.whl"))):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            for target, pattern in wanted.items():
                if target not in found and re.search(pattern, name):
                    path = os.path.join(out, "lib", target)
                    with open(path, "wb") as fh:
                        fh.write(z.read(name))
                    os.chmod(path, 0o755)
                    found[target] = name
missing = sorted(set(wanted) - set(found))
if missing:
    sys.exit(f"get_perf_analyzer.sh: not found in the downloaded wheels: {', '.join(missing)}")
PYEOF
fi

cat > "$DIR/bin/perf_analyzer" <<WRAP
#!/usr/bin/env bash
LD_LIBRARY_PATH="$DIR/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$DIR/lib/perf_analyzer" "\$@"
WRAP
chmod +x "$DIR/bin/perf_analyzer"
"$DIR/bin/perf_analyzer" --version >/dev/null 2>&1 || "$DIR/bin/perf_analyzer" --help >/dev/null 2>&1 || {
    echo "get_perf_analyzer.sh: $DIR/bin/perf_analyzer does not start on this machine" >&2; exit 1; }
echo "$DIR/bin/perf_analyzer"
