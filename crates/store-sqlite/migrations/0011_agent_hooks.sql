-- The hooks an agent found in its `<state-dir>/hooks` folder, from its
-- last `hello`: usable names (a JSON array of strings) and refused files
-- (a JSON array of {"name", "reason"}). NULL before the first hello that
-- carries them, read as empty.
ALTER TABLE hosts ADD COLUMN hooks TEXT NULL;
ALTER TABLE hosts ADD COLUMN hooks_refused TEXT NULL;
