-- 0001_init: users, todos, row-level security on todos.
-- The CHECK constraints mirror csrc/validate.c, so a bypass of the C checks
-- still cannot store a bad row.

CREATE TABLE users (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  email           text NOT NULL CHECK (char_length(email) BETWEEN 3 AND 255),
  hashed_password text NOT NULL CHECK (hashed_password <> ''),
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now()
);
-- One account per normalised (trimmed, lower-cased) email.
CREATE UNIQUE INDEX users_email_key ON users (lower(btrim(email)));

CREATE TABLE todos (
  user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  id          bigint GENERATED ALWAYS AS IDENTITY,
  title       text NOT NULL
              CHECK (char_length(btrim(title, E' \t\n\r\f\x0B')) BETWEEN 1 AND 200),
  description text CHECK (char_length(description) <= 1000),
  completed   boolean NOT NULL DEFAULT false,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  -- Every lookup carries its owner; the shape Citus needs to distribute by user_id.
  PRIMARY KEY (user_id, id)
);
-- Listing newest/oldest first with the completed filter, keyset on id.
CREATE INDEX todos_user_completed_id ON todos (user_id, completed, id);

CREATE FUNCTION tododb_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END $$;
CREATE TRIGGER users_touch BEFORE UPDATE ON users
  FOR EACH ROW EXECUTE FUNCTION tododb_touch();
CREATE TRIGGER todos_touch BEFORE UPDATE ON todos
  FOR EACH ROW EXECUTE FUNCTION tododb_touch();

-- Second wall: a row is visible only when the transaction-local setting
-- tododb.user_id names its owner. No setting (or an empty one) is NULL, and
-- NULL matches nothing: fail closed. The sub-select is evaluated once.
ALTER TABLE todos ENABLE ROW LEVEL SECURITY;
ALTER TABLE todos FORCE ROW LEVEL SECURITY;
CREATE POLICY todos_owner ON todos
  USING (user_id = (SELECT nullif(current_setting('tododb.user_id', true), '')::bigint))
  WITH CHECK (user_id = (SELECT nullif(current_setting('tododb.user_id', true), '')::bigint));
