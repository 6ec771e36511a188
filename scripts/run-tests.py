#!/usr/bin/env python3
"""Runs restic-manager's test binaries several at a time.

`cargo test` runs one test binary after another. Many of ours spend most
of their time waiting — for a real restic, for an agent to reconnect, for
an alert threshold of a minute to pass — so on a 2-core machine running a
few binaries side by side finishes the same tests in much less time.

Usage: run-tests.py PASS... where each PASS is `LABEL|RESTIC|TESTS[|ENV]`:
LABEL names the pass in the summary, RESTIC is the restic binary
(`RM_TEST_RESTIC`), TESTS is `all` or a comma-separated list of
integration tests: `NAME` (in any crate), `CRATE/NAME` (the one in
crates/CRATE) or `CRATE/*` (every one of crates/CRATE), ENV is optional space-separated `NAME=value`
settings the pass's binaries get (e.g. `RM_TEST_STORE=postgres`). `all`
leaves out the integration tests of crates/store-postgres: they need
PostgreSQL and belong to the pass that names them. Every pass's binaries
go into one pool of
`RM_TEST_JOBS` (default 3) at a time, the longest-known first; at most one
browser test (`ui*`) runs at a time. Each binary's output is printed when
it ends; the last lines total every pass. Exits non-zero when any test
failed or a binary could not run.
"""

import json
import os
import re
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Binaries known to take long, started first so the pool ends together.
SLOW_FIRST = [
    "alerts_e2e", "ui_alerts", "backup_e2e", "ui", "storage_faults", "fleet_e2e",
    "copy_e2e", "hooks_e2e", "backup_options_e2e", "policy_push", "rest_repo",
    "crash_safety", "ui_channels", "ui_fleet", "repository_report", "schedules_e2e",
    "local_repo", "cluster_failover",
]

# Integration tests only a PostgreSQL pass runs (never part of `all`).
POSTGRES_ONLY = os.path.join(ROOT, "crates", "store-postgres")

RESULT = re.compile(r"^test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored")


def build():
    """Builds every test binary; returns [(name, kind, executable, cwd)]."""
    out = subprocess.run(
        ["cargo", "test", "--workspace", "--locked", "--no-run",
         "--message-format=json-render-diagnostics"],
        cwd=ROOT, stdout=subprocess.PIPE, check=True, text=True,
    ).stdout
    binaries = []
    for line in out.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg.get("profile", {}).get("test"):
            continue
        target = msg["target"]
        cwd = os.path.dirname(msg["manifest_path"])
        binaries.append((target["name"], target["kind"][0], msg["executable"], cwd))
    return binaries


def names(binary):
    """The names a pass may choose an integration test binary by."""
    name, _, _, cwd = binary
    crate = os.path.basename(cwd)
    return {name, f"{crate}/{name}", f"{crate}/*"}


def main(passes):
    binaries = build()
    jobs = []
    for spec in passes:
        label, restic, tests, *rest = spec.split("|", 3)
        env = dict(pair.split("=", 1) for pair in rest[0].split()) if rest else {}
        if tests == "all":
            chosen = [b for b in binaries if not (b[1] == "test" and b[3] == POSTGRES_ONLY)]
            wanted = None
        else:
            wanted = set(tests.split(","))
            chosen = [b for b in binaries if b[1] == "test" and names(b) & wanted]
        if wanted is not None:
            missing = wanted - set().union(*(names(b) for b in chosen))
            if missing:
                sys.exit(f"no test binary named {', '.join(sorted(missing))}")
        for b in chosen:
            jobs.append((label, restic, env, b))

    def rank(job):
        name = job[3][0]
        return SLOW_FIRST.index(name) if name in SLOW_FIRST else len(SLOW_FIRST)

    jobs.sort(key=rank)
    width = int(os.environ.get("RM_TEST_JOBS", "3"))
    lock = threading.Lock()
    browser = threading.Semaphore(1)
    totals = {}
    failures = []
    queue = list(jobs)
    started = time.monotonic()

    def run(job):
        label, restic, extra, (name, kind, exe, cwd) = job
        is_browser = kind == "test" and name.startswith("ui")
        if is_browser:
            browser.acquire()
        try:
            env = dict(os.environ, RM_TEST_RESTIC=restic, **extra)
            t0 = time.monotonic()
            proc = subprocess.run([exe], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, errors="replace")
            took = time.monotonic() - t0
        finally:
            if is_browser:
                browser.release()
        counts = [0, 0, 0]
        for line in proc.stdout.splitlines():
            m = RESULT.match(line)
            if m:
                counts = [a + int(b) for a, b in zip(counts, m.groups())]
        with lock:
            print(f"     Running {name} ({kind}) against {label} [{took:.0f} s]", flush=True)
            sys.stdout.write(proc.stdout)
            sys.stdout.flush()
            t = totals.setdefault(label, [0, 0, 0, 0.0])
            for i in range(3):
                t[i] += counts[i]
            t[3] += took
            if proc.returncode != 0:
                failures.append(f"{name} ({label}): exit {proc.returncode}")

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                job = queue.pop(0)
            run(job)

    threads = [threading.Thread(target=worker) for _ in range(width)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # Doc tests, once (they do not run restic).
    doc = subprocess.run(["cargo", "test", "--workspace", "--locked", "--doc"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, errors="replace")
    sys.stdout.write(doc.stdout)
    first = passes[0].split("|", 1)[0]
    for line in doc.stdout.splitlines():
        m = RESULT.match(line)
        if m:
            for i in range(3):
                totals.setdefault(first, [0, 0, 0, 0.0])[i] += int(m.groups()[i])
    if doc.returncode != 0:
        failures.append(f"doc tests: exit {doc.returncode}")

    grand = [0, 0, 0]
    for spec in passes:
        label = spec.split("|", 1)[0]
        p, f, i, busy = totals.get(label, [0, 0, 0, 0.0])
        grand = [grand[0] + p, grand[1] + f, grand[2] + i]
        print(f"  {label}: {p} passed, {f} failed, {i} skipped ({busy:.0f} s of test time)")
    print(f"  {len(jobs)} test binaries, {width} at a time: {time.monotonic() - started:.0f} s")
    for failure in failures:
        print(f"  FAILED: {failure}")
    print(f"tests: {grand[0]} passed, {grand[1]} failed, {grand[2]} skipped")
    return 1 if failures or grand[1] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
