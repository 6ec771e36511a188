-- Restore drills (docs/drills.md): the fleet view and /metrics ask for
-- every host's newest successful drill at once. This index answers that
-- with one short descent per host instead of a scan of every host's jobs
-- (measured on 1000 hosts × 500 jobs: 6.2 s without it, 3–9 ms with).
CREATE INDEX jobs_kind_status_host ON jobs (kind, status, host_id, finished_at, id);
