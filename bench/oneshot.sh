#!/usr/bin/env bash
# One-shot wall time of `pybox run` against spawning /usr/bin/python3 under
# bubblewrap (the spawn-per-request design), for print(1) and a numpy script,
# measured in the same run with hyperfine.  Prints a table with the ratios.
#
#   bench/oneshot.sh [RUNS]        (default 30; needs root, hyperfine, bwrap)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-30}

cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release --target pybox >/dev/null
pybox=$PWD/build/release/pybox

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo 'print(1)' >"$dir/print.py"
printf 'import numpy as np\nprint(np.ones((64, 64)).dot(np.ones(64)).sum())\n' >"$dir/np_script.py"

bwrap_cmd() {
    echo "bwrap --unshare-all --die-with-parent --clearenv --ro-bind /usr /usr" \
        "--symlink usr/lib /lib --symlink usr/lib64 /lib64 --symlink usr/bin /bin" \
        "--ro-bind /etc/alternatives /etc/alternatives --ro-bind /etc/ld.so.cache /etc/ld.so.cache" \
        "--proc /proc --dev /dev --tmpfs /tmp --ro-bind $dir/$1 /work/$1 --chdir /work" \
        "/usr/bin/python3 /work/$1"
}

hyperfine -N --warmup 3 --runs "$runs" --export-json "$dir/out.json" \
    -n "pybox print(1)" "$pybox run $dir/print.py" \
    -n "bwrap print(1)" "$(bwrap_cmd print.py)" \
    -n "pybox numpy" "$pybox run $dir/np_script.py" \
    -n "bwrap numpy" "$(bwrap_cmd np_script.py)" >/dev/null

/usr/bin/python3 - "$dir/out.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
print("%-16s %10s %10s %10s" % ("command", "mean ms", "median ms", "stddev"))
for name, x in r.items():
    print("%-16s %10.1f %10.1f %10.1f" % (name, x["mean"] * 1e3, x["median"] * 1e3, x["stddev"] * 1e3))
for what in ("print(1)", "numpy"):
    p, b = r["pybox " + what]["median"], r["bwrap " + what]["median"]
    print("%s: bwrap/pybox = %.2fx (above 1 means pybox is faster)" % (what, b / p))
PY
