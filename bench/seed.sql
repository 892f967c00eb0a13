-- bench/seed.sql: the benchmark data set, run by bench/run through the admin
-- (superuser) URL so that row-level security does not apply.
--   :users     users with :per_user todos each (bench-0001@example.com …)
--   :per_user  todos per user
-- User 1 (bench-0001) was created by `tododb_bench.lua setup` with a real
-- argon2id hash; every other user gets a copy of that hash (same password).
-- Rows are interleaved across users (ORDER BY g, user), as they would be in
-- an application where everyone writes at the same time.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
BEGIN;
TRUNCATE todos, todo_counters;
DELETE FROM users WHERE email <> 'bench-0001@example.com';
DROP TABLE IF EXISTS bench_seed;
INSERT INTO users (email, hashed_password)
  SELECT format('bench-%s@example.com', lpad(g::text, 4, '0')),
         (SELECT hashed_password FROM users WHERE email = 'bench-0001@example.com')
  FROM generate_series(2, :users) g;
-- The bulk-import target: no seeded todos.
INSERT INTO users (email, hashed_password)
  SELECT 'bench-bulk@example.com', hashed_password FROM users
  WHERE email = 'bench-0001@example.com';
-- Ids count per user (migration 0002): todo g of each user has id g.
INSERT INTO todos (user_id, id, title, description, completed)
  SELECT u.id, g, 'Seeded todo ' || g,
         CASE WHEN g % 3 = 0 THEN 'Description of seeded todo ' || g END,
         g % 4 = 0
  FROM generate_series(1, :per_user) g
  CROSS JOIN (SELECT id FROM users WHERE email ~ '^bench-[0-9]{4}@') u
  ORDER BY g, u.id;
INSERT INTO todo_counters (user_id, last_id) SELECT user_id, max(id) FROM todos GROUP BY user_id;
-- The marker: present only when the whole seed committed.
CREATE TABLE bench_seed (users int NOT NULL, per_user int NOT NULL,
                         max_id bigint NOT NULL, seeded_at timestamptz NOT NULL DEFAULT now());
INSERT INTO bench_seed (users, per_user, max_id) SELECT :users, :per_user, max(id) FROM todos;
COMMIT;
VACUUM (ANALYZE) users, todos;
