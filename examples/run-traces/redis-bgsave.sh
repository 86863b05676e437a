#!/bin/sh
# The fork-for-snapshot pattern with the real Redis: a private redis-server on 127.0.0.1:PORT (data in DIR),
# filled with KEYS keys of 256 bytes, then BGSAVE (the server forks a child that serialises the heap to
# DIR/dump.rdb) while redis-benchmark keeps overwriting keys; waits for the save, stops the server.
#   redis-bgsave.sh DIR [PORT=6391] [KEYS=50000]
# Recorded by benchmarks/realprograms.py (README.md, "Real programs").
set -eu
dir=$1; port=${2:-6391}; keys=${3:-50000}
redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --dbfilename dump.rdb --save '' --appendonly no \
    --daemonize no --logfile "$dir/redis.log" --protected-mode yes &
server=$!
tries=0
until redis-cli -p "$port" ping >/dev/null 2>&1; do
    tries=$((tries + 1)); [ "$tries" -lt 200 ] || { kill "$server"; exit 1; }
    sleep 0.05
done
redis-benchmark -p "$port" -t set -n "$keys" -r "$keys" -d 256 -c 4 -q >/dev/null
redis-cli -p "$port" bgsave >/dev/null
redis-benchmark -p "$port" -t set -n "$((keys / 4))" -r "$keys" -d 256 -c 4 -q >/dev/null
until redis-cli -p "$port" info persistence | grep -q 'rdb_bgsave_in_progress:0'; do sleep 0.05; done
redis-cli -p "$port" info persistence | grep -E 'rdb_last_bgsave_status|rdb_last_cow_size' >&2
redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
wait "$server" || true
