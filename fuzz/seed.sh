#!/usr/bin/env bash
# Seeds the fuzz corpora (fuzz/corpus/<target>, git-ignored) from the
# recorded restic fixtures and a few real frames, so libFuzzer starts from
# real input instead of nothing. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
fixtures=../crates/restic/tests/fixtures

mkdir -p corpus/restic_parsers corpus/envelope_decode corpus/job_params
n=0
for out in "$fixtures"/v0.*/*.stdout "$fixtures"/newer/*.stdout "$fixtures"/newer/*.stderr "$fixtures"/v0.*/*.stderr; do
    [ -s "$out" ] || continue
    # Header: command, restic minor - 14, exit code, split point (255 = all stdout).
    for cmd in 1 4 6 7 9 10; do
        n=$((n + 1))
        { printf "\\x$(printf %02x "$cmd")\\x00\\x00\\xff"; cat "$out"; } >"corpus/restic_parsers/seed-$n"
    done
done

i=0
while IFS= read -r frame; do
    i=$((i + 1))
    printf '%s' "$frame" >"corpus/envelope_decode/seed-$i"
done <<'FRAMES'
{"type":"hello","payload":{"protocol_version":1,"agent_version":"0.1.0","restic_version":"0.14.0","hostname":"web-01","os":"linux","arch":"x86_64"}}
{"type":"heartbeat"}
{"type":"schedule.set","payload":{"version":7,"schedules":[{"id":"01J0B9Z3K4M5N6P7Q8R9S0T1V2","kind":"backup","cron":"0 2 * * *","params":{"paths":["/etc"]},"enabled":true}]}}
{"type":"command.run","payload":{"job_id":"01J0BC4D5E6F7G8H9J0K1M2N3P","kind":"restore","params":{"snapshot_id":"1a2b3c4d","include":["/home/x"],"target":"/"}}}
{"type":"log.stream","payload":{"job_id":"j","lines":[{"seq":1,"ts":"2025-06-01T09:20:00.125Z","stream":"stderr","text":"warning"}]}}
{"type":"job.finished","payload":{"job_id":"j","status":"partial","exit_code":3,"stats":{"files_new":12},"error":"x","finished_at":"2025-06-01T09:21:36Z"}}
{"type":"job.progress","payload":{"job_id":"j","percent":42.5,"files_done":1,"eta_seconds":9,"current_files":["/a"]}}
{"type":"tree.list.result","id":"01J0BD7Q8R9S0T1V2W3X4Y5Z6A","payload":{"entries":[{"name":"a","type":"dir","path":"/a","mtime":"2025-05-30T18:02:11Z","mode":493}],"error":null}}
{"type":"error","payload":{"code":"protocol_too_old","message":"m","url":"https://x"}}
FRAMES

j=0
while IFS= read -r params; do
    j=$((j + 1))
    for kind in 1 2 4 8; do
        { printf "\\x$(printf %02x "$kind")"; printf '%s' "$params"; } >"corpus/job_params/seed-$j-$kind"
    done
done <<'PARAMS'
{"paths":["/srv/data","/etc"],"excludes":["*.tmp"],"tags":["nightly"]}
{"keep_daily":7,"keep_within":"1y6m","prune":true}
{"preset":"standard"}
{"read_data_subset":"10%"}
{"snapshot_id":"1a2b3c4d","include":["/srv/data/a"],"target":"/tmp/restore"}
PARAMS
echo "seeded: $n restic_parsers, $i envelope_decode, $((j * 4)) job_params"
