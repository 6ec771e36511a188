-- Fleet scale (tens of thousands of hosts): the snapshot count lives on the
-- host row, so the dashboard lists hosts without one statistics query per
-- host. It is set wherever the snapshot list is replaced.
--
-- Conventions as in 0001-0003 (u64 as INTEGER; NULL = not reported yet).

ALTER TABLE hosts ADD COLUMN snapshot_count INTEGER NULL;

-- Backfill: the stored snapshot list's length when there is one, else the
-- count of the latest statistics row (what the dashboard showed before),
-- else unknown.
UPDATE hosts SET snapshot_count = COALESCE(
    (SELECT COUNT(*) FROM snapshots WHERE snapshots.host_id = hosts.id HAVING COUNT(*) > 0),
    (SELECT repo_stats.snapshot_count FROM repo_stats WHERE repo_stats.host_id = hosts.id
     ORDER BY repo_stats.recorded_at DESC, repo_stats.rowid DESC LIMIT 1)
);
