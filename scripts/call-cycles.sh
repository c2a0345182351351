#!/usr/bin/env bash
# call-cycles.sh - direct calls between the project's C files, and any cycle among them.
#
#   scripts/call-cycles.sh        prints each cycle; exits 1 if there is one
#
# A call is a use of a function (dp_*, lb_*, k8s_*, ctrl_*) defined at file scope in another
# file of common/, dataplane/ or controller/.  Calls through function pointers do not count:
# that is how a file is called back without calling into its caller (engines, services).
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(ls common/*.c dataplane/*.c controller/*.c controller/core/*.c)
edges=$(mktemp)
trap 'rm -f "$edges"' EXIT
# name -> defining file
declare -A def
for f in $files; do
	for n in $(grep -ohE '^[a-z][a-z0-9_ *]*[ *]((dp|lb|k8s|ctrl)_[a-z0-9_]+)\(' "$f" |
		   grep -oE '(dp|lb|k8s|ctrl)_[a-z0-9_]+\($' | tr -d '('); do
		def[$n]=$f
	done
done
for f in $files; do
	for n in $(grep -ohE '\b(dp|lb|k8s|ctrl)_[a-z0-9_]+\(' "$f" | tr -d '(' | sort -u); do
		d=${def[$n]:-}
		if [ -n "$d" ] && [ "$d" != "$f" ]; then
			echo "$f $d"
		fi
	done
done | sort -u >"$edges"
python3 - "$edges" <<'PY'
import collections, sys
g = collections.defaultdict(set)
for line in open(sys.argv[1]):
    a, b = line.split()
    g[a].add(b)
found = set()
state = {}
def dfs(u, path):
    state[u] = 1
    path.append(u)
    for v in sorted(g[u]):
        if state.get(v) == 1:
            cyc = path[path.index(v):]
            found.add(" -> ".join(cyc + [v]))
        elif v not in state:
            dfs(v, path)
    path.pop()
    state[u] = 2
for u in sorted(g):
    if u not in state:
        dfs(u, [])
for c in sorted(found):
    print("cycle:", c)
print("%d files, %d calls between them, %d cycles" % (len(g), sum(len(v) for v in g.values()), len(found)))
sys.exit(1 if found else 0)
PY
