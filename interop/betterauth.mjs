// Runs a real Better Auth (jwt plugin, EdDSA/Ed25519) on its own database of
// the PostgreSQL server tododb uses, signs up two users, and prints as JSON
// what tododb's interop specs check: their JWTs, the JWKS as served at each
// stage of a key rotation, and a token from another issuer.
//
//   BA_ADMIN_URL  a superuser URL of the server (postgresql://…; a unix socket
//                 directory may be given as ?host=/dir): the database
//                 BA_DATABASE (default tododb_better_auth) is dropped and
//                 created on it, and Better Auth's tables are migrated there.
//   BA_BASE_URL   Better Auth's baseURL = the tokens' iss and aud
//                 (default http://127.0.0.1:3000)
//
// Everything goes through auth.handler with Request objects: no HTTP server.
//
// `node betterauth.mjs serve PORT` instead serves Better Auth over HTTP on
// 127.0.0.1:PORT (baseURL http://127.0.0.1:PORT, keys rotated every
// BA_ROTATE seconds, default never) for the nginx spec, printing "ready".
import http from "node:http";
import pg from "pg";
import { betterAuth } from "better-auth";
import { jwt } from "better-auth/plugins/jwt";
import { getMigrations } from "better-auth/db/migration";
import { toNodeHandler } from "better-auth/node";
import { decodeProtectedHeader, decodeJwt } from "jose";

const BASE = process.env.BA_BASE_URL || "http://127.0.0.1:3000";
const OTHER = "http://other-issuer.example";
const DB = process.env.BA_DATABASE || "tododb_better_auth";
const ROTATE = 4;   // seconds a signing key is current (jwks.rotationInterval)
const GRACE = 3;    // seconds a retired key stays listed (jwks.gracePeriod)

function pgConfig(url, database) {
  const u = new URL(url);
  const q = u.searchParams;
  return {
    host: q.get("host") || decodeURIComponent(u.hostname) || undefined,
    port: Number(q.get("port") || u.port || 5432),
    user: q.get("user") || decodeURIComponent(u.username) || undefined,
    password: q.get("password") || decodeURIComponent(u.password) || undefined,
    database,
  };
}

const sleep = (s) => new Promise((r) => setTimeout(r, s * 1000));

async function freshDatabase(adminUrl) {
  const admin = new pg.Client(pgConfig(adminUrl, new URL(adminUrl).pathname.slice(1) || "postgres"));
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS "${DB}" WITH (FORCE)`);
  await admin.query(`CREATE DATABASE "${DB}"`);
  await admin.end();
}

function makeAuth(pool, baseURL, jwks = { rotationInterval: ROTATE, gracePeriod: GRACE }) {
  return betterAuth({
    baseURL,
    secret: "tododb-interop-secret-0123456789abcdef",
    database: pool,
    emailAndPassword: { enabled: true },
    plugins: [jwt({ jwks })],
  });
}

async function serve(adminUrl, port) {
  await freshDatabase(adminUrl);
  const pool = new pg.Pool(pgConfig(adminUrl, DB));
  const rotate = Number(process.env.BA_ROTATE || 0);
  const auth = makeAuth(pool, `http://127.0.0.1:${port}`,
                        rotate ? { rotationInterval: rotate, gracePeriod: 3600 } : {});
  const { runMigrations } = await getMigrations(auth.options);
  await runMigrations();
  const server = http.createServer(toNodeHandler(auth));
  server.listen(port, "127.0.0.1", () => process.stdout.write("ready\n"));
  process.on("SIGTERM", () => server.close(() => pool.end().then(() => process.exit(0))));
}

async function call(auth, method, path, { body, cookie } = {}) {
  const headers = { origin: BASE };
  if (body) headers["content-type"] = "application/json";
  if (cookie) headers.cookie = cookie;
  const res = await auth.handler(new Request(BASE + "/api/auth" + path, {
    method, headers, body: body ? JSON.stringify(body) : undefined,
  }));
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return { json: JSON.parse(text), cookie: res.headers.getSetCookie?.().map((c) => c.split(";")[0]).join("; ") };
}

async function signUp(auth, email, name) {
  const r = await call(auth, "POST", "/sign-up/email", { body: { email, name, password: "correct horse battery" } });
  return { id: r.json.user.id, email: r.json.user.email, cookie: r.cookie };
}

async function token(auth, cookie) {
  const t = (await call(auth, "GET", "/token", { cookie })).json.token;
  return { token: t, kid: decodeProtectedHeader(t).kid, claims: decodeJwt(t) };
}

const jwks = async (auth) => (await call(auth, "GET", "/jwks")).json;

async function main() {
  const adminUrl = process.env.BA_ADMIN_URL;
  if (!adminUrl) throw new Error("BA_ADMIN_URL is not set");
  if (process.argv[2] === "serve") return serve(adminUrl, Number(process.argv[3]));
  await freshDatabase(adminUrl);
  const pool = new pg.Pool(pgConfig(adminUrl, DB));
  const auth = makeAuth(pool, BASE);
  const { runMigrations } = await getMigrations(auth.options);
  await runMigrations();

  const out = { issuer: BASE, audience: BASE, users: [] };
  for (const [email, name] of [["Ada@Example.com", "Ada"], ["bob@example.com", "Bob"]]) {
    const u = await signUp(auth, email, name);
    out.users.push({ id: u.id, email: u.email, cookie: u.cookie, ...(await token(auth, u.cookie)) });
  }
  out.jwks_before = await jwks(auth);

  // The same key, another baseURL: a valid signature with the wrong iss/aud.
  out.other_issuer = { issuer: OTHER, ...(await token(makeAuth(pool, OTHER), out.users[0].cookie)) };

  // Rotation: once the first key's interval is over the next token gets a new
  // key; the old one stays listed for the grace period, then disappears.
  const first = (await pool.query(`SELECT "expiresAt" FROM jwks ORDER BY "createdAt" LIMIT 1`)).rows[0].expiresAt;
  await sleep((first.getTime() - Date.now()) / 1000 + 0.2);
  out.rotated = await token(auth, out.users[0].cookie);
  out.jwks_during = await jwks(auth);
  await sleep((first.getTime() + GRACE * 1000 - Date.now()) / 1000 + 0.2);
  out.jwks_after = await jwks(auth);
  out.now = Math.floor(Date.now() / 1000);
  for (const u of out.users) delete u.cookie;
  await pool.end();
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((e) => { console.error(e.stack || String(e)); process.exit(1); });
