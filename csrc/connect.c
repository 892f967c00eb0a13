/* connect.c: opening a libpq connection. The hosts of a multi-host string
 * are tried one at a time with a per-host timeout (libpq honours
 * connect_timeout only in its blocking path), and whether to try again is
 * decided by the SQLSTATE the server sent and the phase the attempt reached,
 * never by the text of a message (servers may speak any language). */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "tdb.h"

#define MAX_HOSTS 16
#define MAX_KEYWORDS 64

double tdb_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s) {
  struct timespec ts;
  if (s <= 0) return;
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* What an attempt was doing when it stopped (for timeout messages). */
static const char *phase(ConnStatusType s) {
  switch (s) {
    case CONNECTION_STARTED: return "opening the connection";
    case CONNECTION_MADE: return "sending the startup packet";
    case CONNECTION_SSL_STARTUP: return "TLS handshake";
    case CONNECTION_GSS_STARTUP: return "GSSAPI handshake";
    case CONNECTION_AWAITING_RESPONSE: return "authentication";
    case CONNECTION_AUTH_OK: return "waiting for the server to be ready";
    case CONNECTION_CHECK_WRITABLE: case CONNECTION_CHECK_TARGET:
    case CONNECTION_CHECK_STANDBY: case CONNECTION_CONSUME:
      return "checking target_session_attrs";
    default: return "connecting";
  }
}

/* SQLSTATEs with which a server refuses us for good: bad credentials or
 * no pg_hba.conf entry (class 28, which covers "TLS required"), unknown
 * database, no CONNECT privilege, bad startup options, unsupported
 * protocol. Everything else (starting up, shutting down, full, in recovery,
 * a dropped connection) may pass: try again until the deadline. */
static int refusal(const char *s) {
  static const char *const definite[] = {
    "3D000", "42501", "22023", "42704", "08P01", "0A000", "08004", NULL
  };
  if (!strncmp(s, "28", 2)) return 1;
  for (int i = 0; definite[i]; i++) if (!strcmp(s, definite[i])) return 1;
  return 0;
}

static int is_state_char(char ch) {
  return (ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'Z');
}

/* With PQERRORS_VERBOSE, libpq writes a server error as
 * "SEVERITY:  SQLSTATE: message\n...LOCATION:  ...". Takes the SQLSTATE out
 * into state (5 characters + NUL, "" when there is none) and drops the
 * LOCATION line, so the message reads as libpq's default one. */
static void split_sqlstate(char *msg, char *state) {
  char *p = msg, *loc;
  state[0] = '\0';
  while ((p = strstr(p, ":  ")) != NULL) {
    p += 3;
    if (is_state_char(p[0]) && is_state_char(p[1]) && is_state_char(p[2])
        && is_state_char(p[3]) && is_state_char(p[4]) && p[5] == ':' && p[6] == ' ') {
      memcpy(state, p, 5);
      state[5] = '\0';
      memmove(p, p + 7, strlen(p + 7) + 1);
      break;
    }
  }
  while ((loc = strstr(msg, "LOCATION:  ")) != NULL) {
    char *end = strchr(loc, '\n');
    if (end) memmove(loc, end + 1, strlen(end + 1) + 1);
    else *loc = '\0';
  }
}

/* The i-th element of a comma-separated list ("" past its end; a list of
 * one element applies to every host). */
static void nth(const char *list, int i, char *out, size_t cap) {
  const char *p = list ? list : "";
  int n = 0;
  for (const char *q = p; *q; q++) n += *q == ',';
  if (n == 0) i = 0;
  for (; i > 0 && p; i--) { p = strchr(p, ','); if (p) p++; }
  out[0] = '\0';
  if (!p) return;
  n = (int)strcspn(p, ",");
  if ((size_t)n >= cap) n = (int)cap - 1;
  memcpy(out, p, (size_t)n);
  out[n] = '\0';
}

static int count_list(const char *list) {
  int n = 1;
  if (!list || !*list) return 0;
  for (; *list; list++) n += *list == ',';
  return n;
}

/* The parsed connection string, one host at a time. */
typedef struct Target {
  PQconninfoOption *opts;
  const char *kw[MAX_KEYWORDS];
  const char *val[MAX_KEYWORDS];
  int host_at, hostaddr_at, port_at;      /* indexes into kw/val, -1 none */
  const char *hosts, *hostaddrs, *ports;
  int nhosts;
  double per_host;                        /* seconds; 0: until the deadline */
  char host[256], hostaddr[256], port[32];
} Target;

static int target_init(Target *t, const char *ci, tdb_ConnectError *e) {
  int n = 0;
  char *perr = NULL;
  memset(t, 0, sizeof *t);
  t->host_at = t->hostaddr_at = t->port_at = -1;
  if ((t->opts = PQconninfoParse(ci, &perr)) == NULL) {
    snprintf(e->message, sizeof e->message, "%s", perr ? perr : "out of memory");
    if (perr) PQfreemem(perr);
    return 0;
  }
  for (PQconninfoOption *o = t->opts; o->keyword && n < MAX_KEYWORDS - 1; o++) {
    if (!o->val) continue;
    if (!strcmp(o->keyword, "host")) { t->hosts = o->val; t->host_at = n; }
    else if (!strcmp(o->keyword, "hostaddr")) { t->hostaddrs = o->val; t->hostaddr_at = n; }
    else if (!strcmp(o->keyword, "port")) { t->ports = o->val; t->port_at = n; }
    else if (!strcmp(o->keyword, "connect_timeout")) {
      int s = atoi(o->val);                /* libpq's rule: 1 means 2, 0 none */
      t->per_host = s <= 0 ? 0 : s < 2 ? 2 : s;
    }
    t->kw[n] = o->keyword;
    t->val[n++] = o->val;
  }
  t->kw[n] = NULL;
  t->val[n] = NULL;
  t->nhosts = count_list(t->hosts);
  if (count_list(t->hostaddrs) > t->nhosts) t->nhosts = count_list(t->hostaddrs);
  if (t->nhosts < 1) t->nhosts = 1;
  if (t->nhosts > MAX_HOSTS) t->nhosts = MAX_HOSTS;
  return 1;
}

/* Points the host, hostaddr and port values at those of host i. */
static void target_pick(Target *t, int i) {
  nth(t->hosts, i, t->host, sizeof t->host);
  nth(t->hostaddrs, i, t->hostaddr, sizeof t->hostaddr);
  nth(t->ports, i, t->port, sizeof t->port);
  if (t->host_at >= 0) t->val[t->host_at] = t->host;
  if (t->hostaddr_at >= 0) t->val[t->hostaddr_at] = t->hostaddr;
  if (t->port_at >= 0) t->val[t->port_at] = t->port;
}

static const char *target_name(const Target *t) {
  return t->host[0] ? t->host : t->hostaddr[0] ? t->hostaddr : "default host";
}

/* One attempt at the current host until deadline. Returns the connection or
 * NULL with e filled; *timed_out when the deadline ended it. */
static PGconn *attempt(Target *t, double deadline, tdb_ConnectError *e, int *timed_out) {
  PGconn *pg = PQconnectStartParams(t->kw, t->val, 0);
  PostgresPollingStatusType st = PGRES_POLLING_WRITING;
  *timed_out = 0;
  e->sqlstate[0] = '\0';
  e->refused = 0;
  if (!pg) { snprintf(e->message, sizeof e->message, "out of memory"); e->refused = 1; return NULL; }
  /* Failed already (a unix socket that is not there yet, or an option
   * libpq refuses): no SQLSTATE, so tried again until the deadline. */
  if (PQstatus(pg) == CONNECTION_BAD) st = PGRES_POLLING_FAILED;
  PQsetErrorVerbosity(pg, PQERRORS_VERBOSE);     /* server errors carry their SQLSTATE */
  for (;;) {
    struct pollfd p;
    double left;
    int n;
    if (st == PGRES_POLLING_OK) {
      PQsetErrorVerbosity(pg, PQERRORS_DEFAULT);
      return pg;
    }
    if (st == PGRES_POLLING_FAILED) break;
    left = deadline - tdb_now();
    if (left <= 0) {
      snprintf(e->message, sizeof e->message, "host \"%s\"%s%s did not answer in time (%s)",
               target_name(t), t->port[0] ? " port " : "", t->port, phase(PQstatus(pg)));
      *timed_out = 1;
      PQfinish(pg);
      return NULL;
    }
    p.fd = PQsocket(pg);
    p.events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT;
    p.revents = 0;
    n = poll(&p, 1, left > 3600 ? 3600000 : (int)(left * 1000) + 1);
    if (n < 0 && errno != EINTR) {
      snprintf(e->message, sizeof e->message, "poll: %s", strerror(errno));
      PQfinish(pg);
      return NULL;
    }
    if (n == 0) continue;
    st = PQconnectPoll(pg);
  }
  snprintf(e->message, sizeof e->message, "%s", PQerrorMessage(pg));
  split_sqlstate(e->message, e->sqlstate);
  e->refused = e->sqlstate[0] && refusal(e->sqlstate);
  PQfinish(pg);
  return NULL;
}

int tdb_wait_result(PGconn *pg, double deadline) {
  while (PQisBusy(pg)) {
    struct pollfd p;
    double left = deadline - tdb_now();
    int n;
    if (left <= 0) return 0;
    p.fd = PQsocket(pg);
    p.events = POLLIN;
    p.revents = 0;
    n = poll(&p, 1, left > 3600 ? 3600000 : (int)(left * 1000) + 1);
    if (n < 0 && errno != EINTR) return 1;   /* PQgetResult reports the failure */
    if (n > 0 && !PQconsumeInput(pg)) return 1;
  }
  return 1;
}

PGconn *tdb_connect(const char *ci, double timeout, tdb_ConnectError *e) {
  Target t;
  double start = tdb_now(), deadline = start + timeout, wait = 0.025;
  int timed_out = 0;
  memset(e, 0, sizeof *e);
  if (!target_init(&t, ci, e)) { e->refused = 1; return NULL; }
  if (t.per_host == 0 && t.nhosts > 1)     /* leave time for the other hosts */
    t.per_host = timeout / t.nhosts < 2 ? 2 : timeout / t.nhosts;
  for (;;) {
    for (int i = 0; i < t.nhosts; i++) {
      double now = tdb_now(), until = deadline;
      PGconn *pg;
      if (now >= deadline) goto out;
      if (t.per_host > 0 && now + t.per_host < until) until = now + t.per_host;
      target_pick(&t, i);
      if ((pg = attempt(&t, until, e, &timed_out)) != NULL) {
        PQconninfoFree(t.opts);
        return pg;
      }
      if (e->refused) goto out;
    }
    {
      double left = deadline - tdb_now();
      if (left <= 0) break;
      sleep_s(wait < left ? wait : left);
      wait = wait * 2 > 1.0 ? 1.0 : wait * 2;
    }
  }
out:
  PQconninfoFree(t.opts);
  if (!e->refused) {                       /* keep the last real cause */
    char last[sizeof e->message];
    size_t n;
    memcpy(last, e->message, sizeof last);
    n = strlen(last);
    while (n > 0 && (last[n - 1] == '\n' || last[n - 1] == ' ')) last[--n] = '\0';
    snprintf(e->message, sizeof e->message, "timed out after %.3g s (%.960s)", timeout, last);
  }
  return NULL;
}
