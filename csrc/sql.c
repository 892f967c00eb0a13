/* sql.c: every SQL statement of the C core, named, in one table.
 * Session statements all carry `user_id = $1`; row-level security adds the
 * same condition again from the transaction-local setting tododb.user_id.
 * Every UPDATE sets updated_at itself (no trigger: Citus refuses them). */
#include "tdb.h"

/* Plain columns: results come in binary and decode.c formats the
 * timestamps (ISO-8601 UTC) in C, whatever DateStyle and TimeZone say;
 * no non-IMMUTABLE function runs in any statement. */
/* Column lists of the row objects; their positions are TDB_TODO_* and
 * TDB_USER_* in tdb.h. */
#define TODO_COLS "id, user_id, title, description, completed, created_at, updated_at"
#define USER_COLS "id, email, created_at, updated_at"
/* Listing: keyset pagination on (user_id, id); $2 is the cursor bound. */
#define LIST(dir, cmp, extra) \
  "SELECT " TODO_COLS " FROM todos WHERE user_id = $1 AND id " cmp " $2" \
  " AND ($3::text IS NULL OR title ILIKE $3)" extra \
  " ORDER BY id " dir " LIMIT $4"

#define TODO_GET "SELECT " TODO_COLS " FROM todos WHERE user_id = $1 AND id = $2"
/* $3/$5 say whether title/description change; $7 NULL keeps completed. */
#define TODO_UPDATE \
  "UPDATE todos SET title = CASE WHEN $3::bool THEN $4::text ELSE title END," \
  " description = CASE WHEN $5::bool THEN $6::text ELSE description END," \
  " completed = coalesce($7::bool, completed), updated_at = now()" \
  " WHERE user_id = $1 AND id = $2 RETURNING " TODO_COLS
#define TODO_TOGGLE \
  "UPDATE todos SET completed = NOT completed, updated_at = now()" \
  " WHERE user_id = $1 AND id = $2" \
  " RETURNING " TODO_COLS
#define TODO_DELETE "DELETE FROM todos WHERE user_id = $1 AND id = $2"
/* s:batch: the same statement, failing (division by zero, 22012) when it
 * finds no todo, so that the batch's transaction aborts on the server. The
 * join uses must.n: an unused column would be optimised away, error and all. */
#define MUST(stmt) "WITH t AS (" stmt ") SELECT t.* FROM" \
  " (SELECT 1 / count(*) FROM t) AS must(n) LEFT JOIN t ON must.n = 1"
/* Reserves k todo ids of user $1; last_id is the highest of them. */
#define NEXT_IDS(k) \
  "INSERT INTO todo_counters AS c (user_id, last_id) VALUES ($1, " k ")" \
  " ON CONFLICT (user_id) DO UPDATE SET last_id = c.last_id + " k " RETURNING c.last_id"

const tdb_Sql tdb_sql[TDB_NSQL] = {
  /* The row-level security setting (conn.c). On Citus: SET LOCAL in an
   * explicit block, the text followed by the owner's id (an int64 formatted
   * in C) and a closing quote, never prepared; elsewhere set_config. */
  [TDB_SQL_SET_USER] = { "tdb_set_user", "SET LOCAL tododb.user_id = '", 0, 1 },
  [TDB_SQL_SET_CONFIG] = { "tdb_set_config",
    "SELECT set_config('tododb.user_id', $1, true)", 1, 1 },
  [TDB_SQL_CITUS] = { "tdb_citus",
    "SELECT current_setting('citus.propagate_set_commands', true) IS NOT NULL", 0, 1 },
  [TDB_SQL_BEGIN] = { "tdb_begin", "BEGIN", 0, 1 },
  [TDB_SQL_COMMIT] = { "tdb_commit", "COMMIT", 0, 1 },
  [TDB_SQL_ROLLBACK] = { "tdb_rollback", "ROLLBACK", 0, 1 },
  /* Could this role lower the wall: superuser; BYPASSRLS itself or through
   * a role it can SET ROLE to (Neon's neon_superuser); owner (or member of
   * the owner role) of a table under row-level security? */
  [TDB_SQL_INFO] = { "tdb_info",
    "SELECT r.rolsuper, EXISTS (SELECT FROM pg_roles b WHERE (b.rolbypassrls OR b.rolsuper)"
    " AND pg_has_role(b.oid, 'MEMBER')), coalesce((SELECT bool_or(pg_has_role(c.relowner,"
    " 'MEMBER')) FROM pg_class c WHERE c.oid IN (to_regclass('todos'), to_regclass('users'),"
    " to_regclass('todo_counters'))), false) FROM pg_roles r WHERE r.rolname = current_user",
    0, 1 },

  [TDB_SQL_USER_INSERT] = { "tdb_user_insert",
    "INSERT INTO users (email, hashed_password) VALUES ($1, $2) RETURNING " USER_COLS, 2, 0 },
  [TDB_SQL_USER_BY_ID] = { "tdb_user_by_id",
    "SELECT " USER_COLS " FROM users WHERE id = $1", 1, 1 },
  [TDB_SQL_USER_BY_EMAIL] = { "tdb_user_by_email",
    "SELECT " USER_COLS " FROM users WHERE email = $1", 1, 1 },
  /* The account, if any, and the argon2id parameters of a stand-in account
   * (id NULL): the first account with a password from id $2 mod (max id + 1), $2 a hash of
   * the email. An unknown email is checked at the cost of a stand-in chosen
   * from all accounts, the same one for the same email every time. */
  [TDB_SQL_USER_AUTH] = { "tdb_user_auth",
    "(SELECT " USER_COLS ", hashed_password FROM users WHERE email = $1)"
    " UNION ALL (SELECT NULL, NULL, NULL, NULL, substring(hashed_password"
    " FROM '^\\$argon2id\\$v=[0-9]+\\$m=[0-9]+,t=[0-9]+,p=[0-9]+\\$')"
    " FROM users WHERE id >= (SELECT $2::bigint % (max(id) + 1) FROM users)"
    " AND hashed_password IS NOT NULL"
    " ORDER BY id LIMIT 1)", 2, 1 },
  [TDB_SQL_USER_HASH] = { "tdb_user_hash",
    "SELECT " USER_COLS ", hashed_password FROM users WHERE id = $1", 1, 1 },
  /* Compare-and-set: a concurrent password change is not overwritten. */
  [TDB_SQL_USER_SET_HASH] = { "tdb_user_set_hash",
    "UPDATE users SET hashed_password = $2, updated_at = now() WHERE id = $1 AND hashed_password = $3"
    " RETURNING id", 3, 0 },
  [TDB_SQL_USER_SET_EMAIL] = { "tdb_user_set_email",
    "UPDATE users SET email = $2, updated_at = now() WHERE id = $1 RETURNING " USER_COLS, 2, 0 },
  /* Runs as the user (RLS setting); the todos go first, counted, so the
   * count holds on Citus too, where the users delete (a reference table)
   * runs before the rest of the statement and its cascade would leave none. */
  [TDB_SQL_USER_DELETE] = { "tdb_user_delete",
    "WITH t AS (DELETE FROM todos WHERE user_id = $1 RETURNING 1),"
    " d AS (DELETE FROM users WHERE id = $1 RETURNING id)"
    " SELECT d.id, (SELECT count(*) FROM t) FROM d", 1, 0 },
  [TDB_SQL_USER_LIST] = { "tdb_user_list",
    "SELECT " USER_COLS " FROM users WHERE id > $1 ORDER BY id LIMIT $2", 2, 1 },

  /* Ids count per user: the statement takes the next one (or a block of
   * them) from the user's row of todo_counters, locking it until commit. */
  [TDB_SQL_TODO_INSERT] = { "tdb_todo_insert",
    "WITH n AS (" NEXT_IDS("1") ")"
    " INSERT INTO todos (user_id, id, title, description, completed)"
    " SELECT $1, n.last_id, $2, $3, coalesce($4::bool, false) FROM n RETURNING " TODO_COLS, 4, 0 },
  /* Returns the count of rows inserted. The RETURNING makes Citus insert
   * through intermediate results: without it, it would COPY into the shards,
   * which it refuses under row-level security. */
  [TDB_SQL_TODO_INSERT_MANY] = { "tdb_todo_insert_many",
    "WITH n AS (" NEXT_IDS("cardinality($2::text[])") "),"
    " i AS (INSERT INTO todos (user_id, id, title, description, completed)"
    " SELECT $1, n.last_id - cardinality($2::text[]) + u.i, u.t, u.d, coalesce(u.c, false)"
    " FROM n, unnest($2::text[], $3::text[], $4::bool[]) WITH ORDINALITY AS u(t, d, c, i)"
    " RETURNING 1) SELECT count(*) FROM i", 4, 0 },
  [TDB_SQL_TODO_GET] = { "tdb_todo_get", TODO_GET, 2, 1 },
  [TDB_SQL_TODO_UPDATE] = { "tdb_todo_update", TODO_UPDATE, 7, 0 },
  [TDB_SQL_TODO_TOGGLE] = { "tdb_todo_toggle", TODO_TOGGLE, 2, 0 },
  [TDB_SQL_TODO_DELETE] = { "tdb_todo_delete", TODO_DELETE, 2, 0 },
  [TDB_SQL_TODO_LIST_NEW] = { "tdb_todo_list_new", LIST("DESC", "<", ""), 4, 1 },
  [TDB_SQL_TODO_LIST_OLD] = { "tdb_todo_list_old", LIST("ASC", ">", ""), 4, 1 },
  [TDB_SQL_TODO_LIST_NEW_F] = { "tdb_todo_list_new_f",
    LIST("DESC", "<", " AND completed = $5"), 5, 1 },
  [TDB_SQL_TODO_LIST_OLD_F] = { "tdb_todo_list_old_f",
    LIST("ASC", ">", " AND completed = $5"), 5, 1 },
  [TDB_SQL_TODO_COUNT] = { "tdb_todo_count",
    "SELECT count(*) FROM todos WHERE user_id = $1"
    " AND ($2::bool IS NULL OR completed = $2)", 2, 1 },
  [TDB_SQL_TODO_COMPLETE_ALL] = { "tdb_todo_complete_all",
    "UPDATE todos SET completed = true, updated_at = now() WHERE user_id = $1 AND NOT completed", 1, 0 },
  [TDB_SQL_TODO_DELETE_DONE] = { "tdb_todo_delete_done",
    "DELETE FROM todos WHERE user_id = $1 AND completed", 1, 0 },

  /* External identities (identity.c): (issuer, subject) -> user. */
  [TDB_SQL_IDENT_USER] = { "tdb_ident_user",
    "SELECT " USER_COLS " FROM users WHERE id ="
    " (SELECT user_id FROM user_identities WHERE issuer = $1 AND subject = $2)", 2, 1 },
  /* One statement: the user and its identity are created together or not at
   * all. A concurrent provisioning of the same identity makes this fail with
   * a unique violation (the caller then reads the winner's row). */
  [TDB_SQL_IDENT_CREATE] = { "tdb_ident_create",
    "WITH u AS (INSERT INTO users (email) VALUES ($3) RETURNING " USER_COLS "),"
    " i AS (INSERT INTO user_identities (issuer, subject, user_id)"
    " SELECT $1::text, $2::text, id FROM u)"
    " SELECT * FROM u", 3, 0 },
  [TDB_SQL_IDENT_LINK] = { "tdb_ident_link",
    "INSERT INTO user_identities (issuer, subject, user_id) VALUES ($1, $2, $3)", 3, 0 },
  [TDB_SQL_IDENT_UNLINK] = { "tdb_ident_unlink",
    "DELETE FROM user_identities WHERE issuer = $1 AND subject = $2 AND user_id = $3", 3, 0 },
  [TDB_SQL_TODO_GET_MUST] = { "tdb_todo_get_must", MUST(TODO_GET), 2, 0 },
  [TDB_SQL_TODO_UPDATE_MUST] = { "tdb_todo_update_must", MUST(TODO_UPDATE), 7, 0 },
  [TDB_SQL_TODO_TOGGLE_MUST] = { "tdb_todo_toggle_must", MUST(TODO_TOGGLE), 2, 0 },
  [TDB_SQL_TODO_DELETE_MUST] = { "tdb_todo_delete_must",
    MUST(TODO_DELETE " RETURNING id"), 2, 0 },
};

const char *const tdb_tx_sql[TDB_NTX] = {
  [TDB_TX_BEGIN] = "BEGIN ISOLATION LEVEL READ COMMITTED",
  [TDB_TX_BEGIN_RR] = "BEGIN ISOLATION LEVEL REPEATABLE READ",
  [TDB_TX_BEGIN_SER] = "BEGIN ISOLATION LEVEL SERIALIZABLE",
  [TDB_TX_SET_USER] = "SET LOCAL tododb.user_id = '%lld'",
  [TDB_TX_COMMIT] = "COMMIT",
  [TDB_TX_ROLLBACK] = "ROLLBACK",
  [TDB_TX_SAVEPOINT] = "SAVEPOINT tdb_sp",
  [TDB_TX_RELEASE] = "RELEASE SAVEPOINT tdb_sp",
  [TDB_TX_ROLLBACK_TO] = "ROLLBACK TO SAVEPOINT tdb_sp; RELEASE SAVEPOINT tdb_sp",
};
