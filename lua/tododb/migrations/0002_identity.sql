-- 0002_identity: one email identity, todo ids numbered per user, and the
-- grants of the runtime role. Nothing here uses a trigger, a sub-select in a
-- policy or a non-IMMUTABLE function in a statement, so every table can be
-- distributed by user_id (Citus) next to todos.

-- 1. Emails: stored as csrc/validate.c normalises them (ASCII only, trimmed,
-- ASCII letters lower-cased), compared by plain equality. The old unique index
-- used lower(), whose answer for non-ASCII text depends on the collation's
-- locale (U+212A KELVIN SIGN became 'k'). Existing rows are converted; the
-- migration stops, changing nothing, when a stored email is not ASCII or when
-- two accounts would share an email after normalisation: an operator decides
-- which account keeps it (db:change_email, db:delete_user), then migrates again.
DO $$
DECLARE
  bad text;
BEGIN
  SELECT string_agg(id::text, ', ' ORDER BY id) INTO bad
    FROM users WHERE octet_length(email) <> char_length(email);
  IF bad IS NOT NULL THEN
    RAISE EXCEPTION 'migration 0002: emails must be ASCII (a domain in punycode, xn--...); '
      'change the email of the accounts with ids % and migrate again', bad;
  END IF;
  SELECT string_agg(format('%s (ids %s)', e, ids), '; ' ORDER BY e) INTO bad
    FROM (SELECT translate(btrim(email, E' \t\n\r\f\x0B'),
                           'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') AS e,
                 string_agg(id::text, ', ' ORDER BY id) AS ids
            FROM users GROUP BY 1 HAVING count(*) > 1) AS dup;
  IF bad IS NOT NULL THEN
    RAISE EXCEPTION 'migration 0002: accounts share an email once it is trimmed and '
      'lower-cased: %; keep one account per email and migrate again', bad;
  END IF;
END $$;

DROP INDEX users_email_key;
UPDATE users SET email = translate(btrim(email, E' \t\n\r\f\x0B'),
                                   'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')
  WHERE email <> translate(btrim(email, E' \t\n\r\f\x0B'),
                           'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz');
ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email);
ALTER TABLE users ADD CONSTRAINT users_email_normalised CHECK (
  octet_length(email) = char_length(email)
  AND email = translate(btrim(email, E' \t\n\r\f\x0B'),
                        'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'));

-- 2. Todo ids count per user (1, 2, 3 ...), so an id says nothing about other
-- users' writes. todo_counters holds each user's last id; a create bumps it in
-- the same statement (a row lock: ids of one user follow commit order, so
-- listing by id stays creation order). Existing todos keep their ids and each
-- user's counter starts at their highest one.
CREATE TABLE todo_counters (
  user_id bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
  last_id bigint NOT NULL CHECK (last_id >= 0)
);
-- The owner sees every row only while todos is not FORCEd (in this transaction).
ALTER TABLE todos NO FORCE ROW LEVEL SECURITY;
INSERT INTO todo_counters (user_id, last_id)
  SELECT user_id, max(id) FROM todos GROUP BY user_id;
ALTER TABLE todos FORCE ROW LEVEL SECURITY;
ALTER TABLE todos ALTER COLUMN id DROP IDENTITY;

ALTER TABLE todo_counters ENABLE ROW LEVEL SECURITY;
ALTER TABLE todo_counters FORCE ROW LEVEL SECURITY;
CREATE POLICY todo_counters_owner ON todo_counters
  USING (user_id = nullif(current_setting('tododb.user_id', true), '')::bigint)
  WITH CHECK (user_id = nullif(current_setting('tododb.user_id', true), '')::bigint);

-- 3. The runtime role. The migrations run as the role that owns the tables;
-- the application connects as a role that owns nothing and gets exactly the
-- grants its statements need through tododb_app, a NOLOGIN role: an admin
-- runs GRANT tododb_app TO <runtime login>. Creating tododb_app needs
-- CREATEROLE; without it an admin creates the role first. Later migrations
-- grant their new tables to tododb_app the same way.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tododb_app') THEN
    BEGIN
      CREATE ROLE tododb_app NOLOGIN;
    EXCEPTION WHEN insufficient_privilege THEN
      RAISE EXCEPTION 'migration 0002: role tododb_app does not exist and % may not create '
        'roles; as an admin run: CREATE ROLE tododb_app NOLOGIN; GRANT tododb_app TO '
        '<runtime role>; then migrate again', current_user;
    END;
  END IF;
END $$;
GRANT SELECT, INSERT, UPDATE, DELETE ON users, todos TO tododb_app;
GRANT SELECT, INSERT, UPDATE ON todo_counters TO tododb_app;
GRANT SELECT ON tododb_migrations TO tododb_app;
