-- An Idempotency-Key whose submit was cut by a shutdown before the provider answered: a retry must not
-- submit again blindly (the provider may have accepted and charged), so the key says its outcome is unknown.

ALTER TABLE idempotency_keys ADD COLUMN outcome_unknown INTEGER NOT NULL DEFAULT 0;
