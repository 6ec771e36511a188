-- A job end the server decided without its agent (the agent vanished
-- mid-job and did not come back in time) is provisional: when the agent
-- does return and replays the job's real end from its spool, that end
-- replaces the server's verdict. 0 for every end an agent reported.
ALTER TABLE jobs ADD COLUMN end_provisional INTEGER NOT NULL DEFAULT 0;
