#!/bin/sh
# The container image's telemine.toml, made from the repository's
# config/telemine.toml so that the image documents every key exactly as
# the default config does and cannot drift from it. Three values differ,
# because inside a container:
#
#   [kafka] bootstrap_servers = "kafka:9092"   127.0.0.1 would be the
#                                               container itself; "kafka" is
#                                               the broker's name on a
#                                               compose or cluster network
#   [sql]   dir = "sql"                         the SQL sits beside the
#                                               config: /etc/telemine/sql
#   [http]  listen = "0.0.0.0:9464"             reachable through -p 9464:9464
#                                               and by the orchestrator's
#                                               probes
#
# Each of the three keys must be set, uncommented, exactly once in its
# section of the input; otherwise this fails and says which, so a change
# to the default config cannot silently leave the image listening on
# loopback or reading SQL from the wrong folder.
#
# Used by packaging/Containerfile (build stage) and by
# scripts/container-check.sh, which checks the result with
# `telemine check`. POSIX sh and awk only (the check runs it with
# Debian's mawk).
#
# Usage: packaging/image-config.sh IN OUT
set -eu

if [ "$#" -ne 2 ]; then
    echo "usage: $0 IN OUT   (e.g. $0 config/telemine.toml /out/telemine.toml)" >&2
    exit 2
fi
in=$1
out=$2
if [ ! -r "$in" ]; then
    echo "$0: cannot read $in" >&2
    exit 1
fi

tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT

awk -v source="$in" '
BEGIN {
    # section SUBSEP key -> the value the image needs
    want["kafka", "bootstrap_servers"] = "\"kafka:9092\""
    want["sql", "dir"] = "\"sql\""
    want["http", "listen"] = "\"0.0.0.0:9464\""
    print "# The telemine container image'"'"'s config, made from " source
    print "# by packaging/image-config.sh; it differs in three values only:"
    print "# [kafka] bootstrap_servers, [sql] dir and [http] listen. Mount your"
    print "# own over /etc/telemine/telemine.toml to change anything else."
    print "#"
    section = ""
}
# A table header: [name] or [[name]]; what follows belongs to it.
/^[ \t]*\[/ {
    header = $0
    sub(/^[ \t]*\[+[ \t]*/, "", header)
    sub(/[ \t]*\].*$/, "", header)
    section = header
    print
    next
}
/^[ \t]*#/ { print; next }
{
    line = $0
    key = line
    if (match(key, /^[ \t]*[A-Za-z0-9_-]+[ \t]*=/)) {
        key = substr(key, 1, RLENGTH)
        sub(/^[ \t]*/, "", key)
        sub(/[ \t]*=$/, "", key)
        if ((section, key) in want) {
            print key " = " want[section, key]
            seen[section, key]++
            next
        }
    }
    print
}
END {
    bad = 0
    for (k in want) {
        split(k, part, SUBSEP)
        if (seen[k] != 1) {
            printf "image-config.sh: %s: expected one uncommented `%s = ...` in [%s], found %d; the image needs %s = %s there\n", source, part[2], part[1], seen[k] + 0, part[2], want[k] > "/dev/stderr"
            bad = 1
        }
    }
    exit bad
}
' "$in" > "$tmp"

mv "$tmp" "$out"
trap - EXIT
