-- Neon's handshake on loopback: TLS required (hostssl only), SCRAM-SHA-256,
-- channel binding when the client asks for it.
local S = require "support"
local C = require "cluster"
local tododb = require "tododb"
local system = require "system"

local PASSWORD = "Sup3r-s3cret-Passw0rd"

describe("TLS and SCRAM-SHA-256", function()
  local pg, why, certs

  local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

  setup(function()
    if not S.run "command -v openssl >/dev/null" then why = "openssl is not installed" return end
    pg, why = C.new {
      tcp = true,
      conf = { ssl = "on", ssl_cert_file = "'server.crt'", ssl_key_file = "'server.key'",
               password_encryption = "'scram-sha-256'" },
      hba = "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
    }
    if not pg then return end
    certs = pg.dir .. "/certs"
    local d = q(pg.data)
    local cmd = (("mkdir -p %s && cd %s && "):format(q(certs), q(certs))
      .. "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
      .. " -subj /CN=tododb-spec-ca -keyout ca.key -out ca.crt >/dev/null 2>&1 && "
      .. "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
      .. " -subj /CN=localhost -keyout server.key -out server.csr >/dev/null 2>&1 && "
      .. "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' >san.ext && "
      .. "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2"
      .. " -extfile san.ext -out server.crt >/dev/null 2>&1 && "
      .. ("cp server.crt server.key %s/ && chmod 600 %s/server.key && chmod 644 ca.crt"):format(d, d))
      .. (S.capture("id -u"):match "^0" and (" && chown postgres: %s/server.crt %s/server.key"):format(d, d) or "")
    if not S.run(cmd) then why = "could not make the test certificates" return end
    if not pg:start() then why = "the TLS server did not start" return end
    assert(pg:psql(("CREATE ROLE app LOGIN PASSWORD '%s'"):format(PASSWORD)))
  end)

  teardown(function() if pg then pg:destroy() end end)

  local function url(extra, password)
    return ("postgresql://app:%s@127.0.0.1:%d/postgres?%s"):format(password or PASSWORD, pg.port, extra)
  end

  local function connects(u)
    local db, err = tododb.connect(u, { connect_timeout = 10 })
    assert.is_nil(err)
    assert.is_true(db:info().ssl)
    assert.equal("app", db:query "SELECT current_user AS u"[1].u)
    db:close()
  end

  it("connects with sslmode=require", function()
    if why then return pending(why) end
    connects(url "sslmode=require")
  end)

  it("connects with sslmode=verify-full and the CA file", function()
    if why then return pending(why) end
    connects(("postgresql://app:%s@localhost:%d/postgres?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert=%s")
      :format(PASSWORD, pg.port, certs .. "/ca.crt"))
  end)

  it("connects with channel_binding=require (SCRAM-SHA-256-PLUS)", function()
    if why then return pending(why) end
    connects(url "sslmode=require&channel_binding=require")
  end)

  -- Refused for good: at once, no retry loop, a clear code, no password shown.
  local function refused(u, state)
    local t0 = system.monotime()
    local db, err = tododb.connect(u, { connect_timeout = 30 })
    local elapsed = system.monotime() - t0
    assert.is_nil(db)
    assert.equal("unauthorized", err.code)
    assert.equal(state, err.sqlstate)
    assert.is_true(elapsed < 10, "retried for " .. elapsed .. " s")
    for _, text in ipairs { err.message, tostring(err) } do
      assert.is_nil(text:find(PASSWORD, 1, true), text)
      assert.is_nil(text:find("Passw0rd", 1, true), text)
    end
    return err
  end

  it("refuses sslmode=disable against a hostssl-only rule at once with unauthorized", function()
    if why then return pending(why) end
    refused(url "sslmode=disable", "28000")
  end)

  it("refuses a wrong password at once with unauthorized", function()
    if why then return pending(why) end
    refused(url("sslmode=require", "wrong-" .. PASSWORD), "28P01")
  end)
end)
