-- One row the server rewrites every few seconds to learn whether it can
-- write its database (full disk, read-only file system, I/O errors).
CREATE TABLE storage_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    written_at INTEGER NOT NULL
);
