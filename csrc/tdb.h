/* tdb.h: what the C files of tododb share. Globals are tdb_*.
 *
 * How C helpers report (the same in every file):
 * - tdb_check_*(L, idx, ...) read an argument. A wrong type or a closed
 *   handle is misuse and raises (tdb_argerror); a value of the right type
 *   that is malformed or out of range is the world's fault: nil, err.
 * - A helper that can fail with nil, err returns int: 0 = ok, 2 = nil and
 *   the error object pushed, so its caller does `return 2`. A helper that
 *   builds something returns a pointer: NULL = nil, err pushed.
 * - Pure validators (no Lua state) return NULL or the message naming the
 *   broken rule; predicates return 1 or 0.
 * - tdb_push_* push exactly one value.
 */
#ifndef TDB_H
#define TDB_H

#include <limits.h>
#include <stddef.h>
#include <libpq-fe.h>
#include "compat.h"

#define TDB_VERSION "0.1.0"
#define TDB_CONN_MT    "tododb.Connection"
#define TDB_SESSION_MT "tododb.Session"
#define TDB_USER_MT    "tododb.User"
#define TDB_TODO_MT    "tododb.Todo"
#define TDB_ERROR_MT   "tododb.Error"

#define TDB_EXPORT __attribute__((visibility("default")))

/* error.c ------------------------------------------------------------ */
/* Pushes nil and an error object built from a printf-style message; returns 2. */
int tdb_push_error(lua_State *L, const char *code, const char *field,
                   const char *sqlstate, const char *fmt, ...);
/* Raises "bad argument #arg to 'f' (message)" with a printf-style message;
 * a table field names itself: "title must be a string, got number". */
int tdb_argerror(lua_State *L, int arg, const char *fmt, ...);
/* The error code for a SQLSTATE. */
const char *tdb_sqlstate_code(const char *sqlstate);
/* tododb.null: a light userdata NULL, the same value as cjson.null. */
void tdb_push_null(lua_State *L);
int tdb_is_null(lua_State *L, int idx);
void tdb_error_open(lua_State *L);

/* sql.c: every statement, named --------------------------------------- */
typedef struct tdb_Sql {
  const char *name;     /* prepared statement name */
  const char *text;
  int nparams;
  int readonly;         /* may be retried once after a reconnect */
} tdb_Sql;

enum {
  TDB_SQL_SET_USER, TDB_SQL_SET_CONFIG, TDB_SQL_CITUS, TDB_SQL_BEGIN, TDB_SQL_COMMIT, TDB_SQL_ROLLBACK, TDB_SQL_INFO,
  TDB_SQL_USER_INSERT, TDB_SQL_USER_BY_ID, TDB_SQL_USER_BY_EMAIL,
  TDB_SQL_USER_AUTH, TDB_SQL_USER_HASH, TDB_SQL_USER_SET_HASH,
  TDB_SQL_USER_SET_EMAIL, TDB_SQL_USER_DELETE, TDB_SQL_USER_LIST,
  TDB_SQL_TODO_INSERT, TDB_SQL_TODO_INSERT_MANY, TDB_SQL_TODO_GET,
  TDB_SQL_TODO_UPDATE, TDB_SQL_TODO_TOGGLE, TDB_SQL_TODO_DELETE,
  TDB_SQL_TODO_LIST_NEW, TDB_SQL_TODO_LIST_OLD,
  TDB_SQL_TODO_LIST_NEW_F, TDB_SQL_TODO_LIST_OLD_F,
  TDB_SQL_TODO_COUNT, TDB_SQL_TODO_COMPLETE_ALL, TDB_SQL_TODO_DELETE_DONE,
  /* external identities (identity.c) */
  TDB_SQL_IDENT_USER, TDB_SQL_IDENT_CREATE, TDB_SQL_IDENT_LINK, TDB_SQL_IDENT_UNLINK,
  TDB_SQL_TODO_GET_MUST, TDB_SQL_TODO_UPDATE_MUST, TDB_SQL_TODO_TOGGLE_MUST,
  TDB_SQL_TODO_DELETE_MUST,
  TDB_NSQL
};
extern const tdb_Sql tdb_sql[TDB_NSQL];
/* Column positions of sql.c's TODO_COLS and USER_COLS (keep in step). The
 * password hash follows USER_COLS where a statement selects it. */
enum {
  TDB_TODO_ID, TDB_TODO_USER_ID, TDB_TODO_TITLE, TDB_TODO_DESCRIPTION,
  TDB_TODO_COMPLETED, TDB_TODO_CREATED_AT, TDB_TODO_UPDATED_AT
};
enum {
  TDB_USER_ID, TDB_USER_EMAIL, TDB_USER_CREATED_AT, TDB_USER_UPDATED_AT, TDB_USER_HASH
};

/* Transaction control (s:transaction, s:batch): plain text, no parameters.
 * TDB_TX_SET_USER is a format for the user id as a C-formatted int8: SET
 * takes no parameters, and only SET LOCAL reaches Citus workers. */
enum {
  TDB_TX_BEGIN, TDB_TX_BEGIN_RR, TDB_TX_BEGIN_SER, TDB_TX_SET_USER,
  TDB_TX_COMMIT, TDB_TX_ROLLBACK, TDB_TX_SAVEPOINT, TDB_TX_RELEASE,
  TDB_TX_ROLLBACK_TO, TDB_NTX
};
extern const char *const tdb_tx_sql[TDB_NTX];

/* connect.c: opening a connection ------------------------------------ */
typedef struct tdb_ConnectError {
  char sqlstate[6];             /* the server's, "" when it sent none */
  int refused;                  /* definite refusal: trying again cannot help */
  char message[1024];
} tdb_ConnectError;
/* Seconds on a monotonic clock. */
double tdb_now(void);
/* Connects within timeout seconds, trying each host of the string in turn
 * (per-host timeout: the string's connect_timeout) and again with backoff
 * until a definite refusal or the deadline. NULL with e filled on failure. */
PGconn *tdb_connect(const char *conninfo, double timeout, tdb_ConnectError *e);
/* Waits until PQgetResult(pg) would not block: 1, or 0 when the deadline
 * (tdb_now() seconds) passed first. */
int tdb_wait_result(PGconn *pg, double deadline);

/* conn.c -------------------------------------------------------------- */
#define TDB_CURSOR_KEYS 4
typedef struct tdb_Conn {
  PGconn *pg;
  char *conninfo;               /* kept for reconnects; wiped on close */
  double connect_timeout;       /* seconds */
  double call_timeout;          /* seconds a statement may take; 0: no limit */
  int timed_out;                /* the last statement hit call_timeout */
  int prepare;                  /* use named prepared statements */
  unsigned long long pwhash_ops;
  size_t pwhash_mem;
  unsigned char prepared[TDB_NSQL];
  int nadhoc;                   /* named ad-hoc statements so far */
  unsigned generation;          /* bumped whenever prepared statements are lost */
  unsigned cache_generation;    /* that of db:query's statement cache */
  unsigned long long nonce;     /* random: ad-hoc names of two clients never meet */
  int broken;                   /* reconnect before the next statement */
  /* s:transaction: the Session of the transaction open on this connection,
   * or NULL. While set, the runner adds no RLS setting (it is in force),
   * never reconnects or retries, and notes conflicts in tx_conflict. */
  const void *tx;
  int tx_conflict;              /* a statement in it failed with 40001/40P01 */
  int allow_rls_bypass;         /* opts.allow_rls_bypass: sessions on any role */
  int role_ok;                  /* the role was checked: sessions may run */
  int ncursor_keys;             /* 0: cursors carry a public checksum */
  unsigned char cursor_keys[TDB_CURSOR_KEYS][32];  /* current first, then previous */
  int set_local;                /* Citus: the RLS setting by SET LOCAL in an
                                   explicit block (else set_config) */
} tdb_Conn;

/* The open connection at idx; raises when it is closed. */
tdb_Conn *tdb_check_conn(lua_State *L, int idx);
/* The statement runner: tdb_run, tdb_exec and db:query share its policy
 * (conn.c: prepared once per server session, the per-call deadline, reads
 * retried once after a lost connection, writes never).
 * Runs statement id with text parameters. With owner non-NULL the statement
 * runs with the row-level security setting tododb.user_id = owner in one
 * pipeline (one round trip): BEGIN; SET LOCAL; statement; COMMIT on Citus,
 * set_config(); statement elsewhere; or alone when c->tx says an explicit
 * transaction with the setting is open. Returns the statement's result, which the caller
 * clears; on failure pushes nil, err and returns NULL. */
PGresult *tdb_run(lua_State *L, tdb_Conn *c, const char *owner, int id,
                  const char *const *vals);
/* Explicit transactions (session.c's s:transaction and s:batch). */
/* Runs sql with the simple protocol (several statements allowed; db:exec)
 * and returns the last result (the caller clears it); NULL with nil, err
 * pushed. Never retried; inside a transaction a lost connection is an error,
 * never a silent reconnect. */
PGresult *tdb_exec(lua_State *L, tdb_Conn *c, const char *sql);
/* One pipeline, one round trip, within the per-call deadline and never
 * retried: the parameterless statements head[0..nhead),
 * statements ids[i] with vals[i] (i < n), tail (or NULL), then sync. res[i]
 * gets statement i's result (the caller clears each). Returns -1 when all
 * ran; else pushes nil, err and returns the index of the first statement
 * that failed (n when it was head, tail or the connection). */
int tdb_run_batch(lua_State *L, tdb_Conn *c, const char *const *head, int nhead,
                  int n, const int *ids, const char *const *const *vals,
                  const char *tail, PGresult **res);
/* Reads the current role's powers over the wall (superuser, BYPASSRLS,
 * owns the tables): 0 ok, 2 with nil, err pushed. */
int tdb_role_powers(lua_State *L, tdb_Conn *c, int *super, int *bypass, int *owns);
/* Builds the Connection class from conn.c's methods and these lists, and
 * sets tododb.core.Connection to its method table (where Lua adds more). */
void tdb_conn_open(lua_State *L);

/* validate.c ---------------------------------------------------------- */
/* An id argument: a number or a decimal string (as from a URL path).
 * 0 with *out set; 2 with nil, err pushed: "invalid" (field "id") when it
 * is not an integer, "not_found" ("<what> not found") when it lies outside
 * int8, where no row can be. Raises for any other type. */
int tdb_check_id(lua_State *L, int idx, const char *what, long long *out);
/* The optional integer field of the table at arg (absent leaves *out
 * alone), from lo to hi: 0 ok; 2 with nil, err "invalid" naming the field.
 * Raises for a type other than number (or, with strings, a string). */
int tdb_check_int_field(lua_State *L, int arg, const char *field, int strings,
                        long long lo, long long hi, long long *out);
/* Characters in a valid UTF-8 string, or -1 when it is not valid UTF-8 or
 * holds a NUL byte. */
long tdb_utf8_len(const char *s, size_t n);
/* Bytes in the well-formed UTF-8 sequence at s (n > 0 bytes left), 0 when
 * there is none. A NUL byte is a sequence of one. The one UTF-8 validator. */
size_t tdb_utf8_next(const char *s, size_t n);
/* Validates and normalises (ASCII only; trim, lower-case) an email into buf
 * (at least 256 bytes). Returns NULL or a message naming the broken rule. */
const char *tdb_check_email(const char *s, size_t n, char *buf, size_t *outlen);
/* Trims title (ASCII white space) and checks 1-200 characters of UTF-8;
 * *s and *n are updated to the trimmed text. NULL or a message. */
const char *tdb_check_title(const char **s, size_t *n);
/* Description: at most 1000 characters of UTF-8 without NUL. */
const char *tdb_check_description(const char *s, size_t n);
void tdb_validate_open(lua_State *L);

/* json.c: strict JSON (RFC 8259) ------------------------------------- */
/* An append buffer: bytes in a userdata at stack slot idx. Growing replaces
 * that slot, so the stack above it stays free for the caller; growing past
 * max raises. The writers below need nothing else from the Lua stack. */
typedef struct tdb_Buf {
  lua_State *L;
  int idx;
  char *p;
  size_t n, cap, max;
  int sep;                      /* a value came last: the next needs a comma */
} tdb_Buf;
/* Pushes the userdata (empty buffer). */
void tdb_buf_init(lua_State *L, tdb_Buf *b, size_t max);
/* Room for k more bytes at b->p + b->n (the caller adds to b->n). */
char *tdb_buf_room(tdb_Buf *b, size_t k);
void tdb_buf_add(tdb_Buf *b, const void *s, size_t k);
/* Replaces the userdata at b->idx with the buffer's text as a string. */
void tdb_buf_result(tdb_Buf *b);
/* JSON values, commas included: open '{' or '[', then keys and values,
 * then close with '}' or ']'. tdb_json_key takes a plain ASCII name that
 * needs no escaping (a C literal); tdb_json_str returns 0 for text that is
 * not UTF-8, tdb_json_double 0 for NaN and infinities (nothing written; it
 * always writes a fraction or an exponent, so the number reads back as a
 * float). tdb_json_int64 writes any int8 exactly. */
void tdb_json_open(tdb_Buf *b, char c);
void tdb_json_close(tdb_Buf *b, char c);
void tdb_json_key(tdb_Buf *b, const char *k);
int tdb_json_str(tdb_Buf *b, const char *s, size_t n);
void tdb_json_int64(tdb_Buf *b, long long v);
int tdb_json_double(tdb_Buf *b, double d);
void tdb_json_bool(tdb_Buf *b, int v);
void tdb_json_null(tdb_Buf *b);
void tdb_json_raw(tdb_Buf *b, const char *s, size_t n);   /* JSON text as is */
/* The Lua value at idx (tables with keys 1..n are arrays, tododb.null is
 * null); tdb_json_members writes the string-keyed members of the table at
 * idx into an open object. 0 ok; 2 with nil, err (invalid) pushed for data
 * JSON cannot hold: strings that are not UTF-8, NaN and infinities,
 * integers beyond +-(2^53 - 1) (the reader refuses them too), tables nested
 * deeper than 32 (a cycle). A type JSON has no form for (a function,
 * userdata, a table mixing array and string keys) raises for argument arg. */
int tdb_json_value(lua_State *L, tdb_Buf *b, int idx, int arg);
int tdb_json_members(lua_State *L, tdb_Buf *b, int idx, int arg);
/* n > 0 when the table at idx is a sequence 1..n (a JSON array), else 0. */
size_t tdb_json_arraylen(lua_State *L, int idx);
/* Pushes the value of the JSON text s[0..n) (a JSON object only when
 * object is non-zero) and returns 1; 0 with the stack unchanged when the
 * text is not that. Never raises on bad input. Integers (no fraction, no
 * exponent) beyond +-(2^53 - 1) are refused, so Lua 5.4 and LuaJIT read
 * the same numbers: integers within, floats otherwise. */
int tdb_json_decode(lua_State *L, const char *s, size_t n, int object);

/* password.c ---------------------------------------------------------- */
/* Reads opts.pwhash (opts at idx, may be absent) into c; raises when bad. */
void tdb_password_config(lua_State *L, int idx, tdb_Conn *c);
int tdb_password_hash(tdb_Conn *c, const char *pw, size_t n, char *out);
int tdb_password_verify(const char *hash, const char *pw, size_t n);
int tdb_password_needs_rehash(tdb_Conn *c, const char *hash);
/* One failing verification at params (a stored hash's "$argon2id$…$"
 * prefix) or, for NULL, at the connection's cost. */
void tdb_password_dummy(tdb_Conn *c, const char *params, const char *pw, size_t n);

/* user.c, session.c, todo.c, token.c ----------------------------------- */
#define TDB_EMAIL_BUF 256
/* Connection methods defined beside their objects: the account operations
 * (user.c), external identities (identity.c) and db:session (session.c).
 * conn.c registers them. */
extern const luaL_Reg tdb_conn_user_methods[];
extern const luaL_Reg tdb_conn_identity_methods[];
extern const luaL_Reg tdb_conn_session_methods[];
/* db:get_user_json and the other User-returning methods as JSON (registered
 * with the upvalue true: TDB_AS_JSON). */
extern const luaL_Reg tdb_conn_user_json_methods[];
/* A User or a user id at idx, like tdb_check_id. */
int tdb_check_user_id(lua_State *L, int idx, long long *out);
/* Pushes row `row` of a result with the user columns (sql.c USER_COLS) as a User. */
void tdb_push_user(lua_State *L, const PGresult *r, int row);
void tdb_user_open(lua_State *L);
void tdb_push_todo(lua_State *L, const PGresult *r, int row);
void tdb_todo_open(lua_State *L);
/* Sets tododb.core.Session to the Session method table. */
void tdb_session_open(lua_State *L);
/* Reads opts.cursor_key (opts at idx, may be absent), else $TODODB_CURSOR_KEY
 * (and $TODODB_CURSOR_KEY_PREVIOUS), into c; raises when bad. */
void tdb_cursor_config(lua_State *L, int idx, tdb_Conn *c);
void tdb_token_open(lua_State *L);

/* decode.c: values out of a PGresult ------------------------------------- */
/* The statements of sql.c return binary results: no server-side formatting,
 * so DateStyle and TimeZone cannot change what tododb returns. */
#define TDB_BINARY 1
#define TDB_TIME_BUF 32         /* "YYYY-MM-DDTHH:MM:SS.ffffffZ" and its NUL */
/* PostgreSQL's int8 text (also PQcmdTuples): an optional '-', digits. */
long long tdb_parse_int8(const char *s);
/* Writes v in decimal, as "%lld" would, and a NUL into buf (TDB_INT8_BUF
 * bytes); returns the length. */
#define TDB_INT8_BUF 21
size_t tdb_int8_text(char *buf, long long v);
/* Field (row, col) of an int2/int4/int8, bool or timestamptz column; a
 * timestamp as ISO-8601 UTC with microseconds into out[TDB_TIME_BUF]. */
long long tdb_get_int8(const PGresult *r, int row, int col);
int tdb_get_bool(const PGresult *r, int row, int col);
void tdb_get_time(const PGresult *r, int row, int col, char *out);
/* Pushes the rows as an array of tables keyed by column name (db:query). */
void tdb_push_rows(lua_State *L, const PGresult *r);

/* object.c: read-only row objects ------------------------------------------ */
typedef struct tdb_Str { const char *s; size_t n; } tdb_Str;   /* s NULL: nil */
enum { TDB_F_INT64, TDB_F_BOOL, TDB_F_TIME, TDB_F_STR };
typedef struct tdb_Field {
  const char *name;
  unsigned char type;           /* TDB_F_*: long long, int, char[TDB_TIME_BUF], tdb_Str */
  unsigned char key;            /* compared by == (TDB_F_INT64 only) */
  unsigned char null;           /* absent: tododb.null in to_table(), else left out */
  size_t offset;
  int col;                      /* its column in a result (sql.c TODO_COLS, USER_COLS) */
} tdb_Field;
typedef struct tdb_Class {
  const char *name;             /* the metatable's name */
  const tdb_Field *fields;      /* ends with a NULL name */
  const char *readonly;         /* the message of an assignment */
  /* Pushes tostring(obj); id is the first field (an int64) in decimal. */
  void (*tostring)(lua_State *L, const void *obj, const char *id);
  /* Pushes row `row` of a result as an object of the class. */
  void (*push)(lua_State *L, const PGresult *r, int row);
} tdb_Class;
/* Registers the class's metatable: __index (fields, to_table), __newindex,
 * __eq, __tostring; in the registry under its name and under k's address. */
void tdb_class_open(lua_State *L, const tdb_Class *k);
/* Sets the metatable of class k on the object on top of the stack: one raw
 * lookup by address (luaL_setmetatable finds it by name). */
void tdb_set_class(lua_State *L, const tdb_Class *k);
/* Field (row, col) as it lies in the result (s NULL for NULL): read once,
 * then sized (TDB_STR_SIZE) and copied (tdb_copy_str). */
tdb_Str tdb_field_str(const PGresult *r, int row, int col);
/* Bytes that v takes in an object's trailing text (0 for NULL). */
#define TDB_STR_SIZE(v) ((v).s ? (v).n + 1 : 0)
/* Copies v to at (NUL-terminated) and points out at it; returns where the
 * next one goes. NULL leaves out->s NULL. */
char *tdb_copy_str(tdb_Str *out, char *at, tdb_Str v);
extern const tdb_Class tdb_todo_class, tdb_user_class;

/* JSON straight from a result (the *_json methods) ------------------------- */
/* The *_json methods are the same C functions as their namesakes,
 * registered with the upvalue true: they run the same statements, checks
 * and errors, and only the result builder differs. */
#define TDB_AS_JSON(L) lua_toboolean((L), lua_upvalueindex(1))
#define TDB_JSON_MAX ((size_t)64 << 20)   /* bytes; a page of 200 is < 2 MiB */
/* Writes row `row` of r as the JSON object of a k object: what its
 * to_table() encodes to, fields in to_table() order, int8 exact. 0 when a
 * text column is not UTF-8 (the database's encoding is not UTF8). */
int tdb_json_row(tdb_Buf *b, const tdb_Class *k, const PGresult *r, int row);
/* Replaces the buffer (tdb_buf_init) with its text and returns 1; when ok
 * is 0, drops it and pushes nil, err (internal) and returns 2. */
int tdb_json_done(tdb_Buf *b, int ok);
/* Pushes row 0 of r as a k object (tdb_push_todo / tdb_push_user), or its
 * JSON text in a *_json call; returns what the Lua function returns. */
int tdb_push_row(lua_State *L, const tdb_Class *k, const PGresult *r);

#endif
