# tododb — see README.md. `make help` lists the targets.
LUA      ?= lua5.4
PREFIX   ?= /usr/local
PKG      ?= pkg-config
CC       ?= cc
OPT      ?= -O2

ifeq ($(LUA),luajit)
  LUA_PC  := luajit
  LUA_VER := 5.1
else ifeq ($(LUA),lua5.4)
  LUA_PC  := lua5.4
  LUA_VER := 5.4
else
  $(error LUA must be lua5.4 or luajit)
endif

BUILD   ?= build/$(LUA)
SRC     := $(wildcard csrc/*.c)
HDR     := $(wildcard csrc/*.h)
OBJ     := $(SRC:csrc/%.c=$(BUILD)/%.o)
MODULE  := $(BUILD)/tododb/core.so
CFLAGS  += -std=c99 -Wall -Wextra -Werror -pedantic $(OPT) -fPIC -fvisibility=hidden \
           -D_POSIX_C_SOURCE=200809L $(shell $(PKG) --cflags $(LUA_PC) libpq libsodium)
LDLIBS  += $(shell $(PKG) --libs libpq libsodium) -lm
TOP     := $(CURDIR)
LPATH   := $(TOP)/lua/?.lua;$(TOP)/lua/?/init.lua
CPATH   := $(TOP)/$(BUILD)/?.so

DEB_PKGS := lua5.4 liblua5.4-dev luajit2 libluajit2-5.1-dev libpq-dev libsodium-dev \
            postgresql postgresql-contrib lua-busted lua-cjson pkg-config gcc make \
            valgrind nginx libnginx-mod-http-lua curl ca-certificates nodejs lua-check cppcheck pgbouncer
# make bench: HTTP load (wrk), the Lua benchmarks' clock, the SQLModel baseline.
BENCH_PKGS := wrk lua-system python3-sqlmodel python3-psycopg2 python3-argon2
DEB_PKGS += $(BENCH_PKGS)
# Building Citus from ../shared/vendor when it is not installed (test-citus).
CITUS_BUILD_PKGS := postgresql-server-dev-15 libcurl4-openssl-dev liblz4-dev libzstd-dev \
            libkrb5-dev libssl-dev libxml2-dev libxslt1-dev zlib1g-dev libreadline-dev \
            autoconf flex bison
DEB_PKGS += $(CITUS_BUILD_PKGS)

INTEROP ?= build/interop

.PHONY: interop all deps test check check-asan check-valgrind env install clean demo serve \
        bench db-start db-stop help lint lint-c test-citus test-pgbouncer faults
all: $(MODULE)

$(BUILD)/%.o: csrc/%.c $(HDR)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c -o $@ $<

$(MODULE): $(OBJ)
	@mkdir -p $(@D)
	$(CC) -shared $(LDFLAGS) -o $@ $(OBJ) $(LDLIBS)

help:
	@echo "make deps | all | test | test-citus | test-pgbouncer | faults | check | lint | interop | demo | serve | bench | env | install | clean"

# Installs the Debian packages that are missing; a second run does nothing.
deps:
	@command -v dpkg >/dev/null || { echo "deps: not a Debian system; install:$(DEB_PKGS)"; exit 0; }; \
	missing=""; for p in $(DEB_PKGS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq $$missing; \
	else echo "deps: all installed"; fi

# Every spec under lua5.4, then under luajit; last line: "tests: N passed, M failed".
test: deps
	@$(MAKE) -s LUA=lua5.4 all
	@$(MAKE) -s LUA=luajit all
	@scripts/run-specs lua5.4 luajit

# The whole suite on a Citus coordinator + 2 workers (scripts/citus; Citus is
# built from ../shared/vendor once when not installed), every fresh schema
# distributed (db:distribute). INTERPS=lua5.4 by default: the C is the same.
# The Better Auth specs run too once `make interop` has installed it.
INTERPS ?= lua5.4
test-citus: deps
	@$(MAKE) -s LUA=lua5.4 all
	@$(MAKE) -s LUA=luajit all
	@TDB_INTEROP=$(abspath $(INTEROP)) scripts/citus run scripts/run-specs $(INTERPS)

# The whole suite through PgBouncer in transaction mode, prepare off
# (scripts/pgbouncer): what Neon's pooled endpoint is.
test-pgbouncer: deps
	@$(MAKE) -s LUA=lua5.4 all
	@$(MAKE) -s LUA=luajit all
	@scripts/pgbouncer run scripts/run-specs $(INTERPS)

# Fault specs (spec/faults/*_fault.lua): servers killed with -9, restarted,
# full, fake, frozen with a promoted replica; throwaway servers only.
faults: deps
	@$(MAKE) -s LUA=lua5.4 all
	@SPECS=spec/faults TDB_PATTERN=_fault scripts/run-specs lua5.4

# The specs with ASan+UBSan, then under valgrind (lua5.4).
check: deps
	@$(MAKE) -s LUA=luajit all    # the nginx spec serves with the LuaJIT build
	@$(MAKE) -s check-asan check-valgrind
check-asan:
	@$(MAKE) -s LUA=lua5.4 BUILD=build/asan OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all" \
	  LDFLAGS="-fsanitize=address,undefined" all
	@TDB_BUILD=build/asan TDB_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	  scripts/run-specs lua5.4
check-valgrind:
	@$(MAKE) -s LUA=lua5.4 BUILD=build/debug OPT="-O1 -g" all
	@TDB_BUILD=build/debug TDB_VALGRIND=1 scripts/run-specs lua5.4

# Static check of the C core with Debian's cppcheck, once per Lua C API
# (compat.h switches on LUA_VERSION_NUM). Local variables declared at the
# top of a function are the house style, so variableScope is not reported.
CPPCHECK := cppcheck --enable=warning,style,performance,portability --error-exitcode=1 \
            --inline-suppr --std=c99 --quiet -I csrc -D_POSIX_C_SOURCE=200809L \
            --suppress=variableScope
lint-c:
	@$(CPPCHECK) -DLUA_VERSION_NUM=504 csrc/
	@$(CPPCHECK) -DLUA_VERSION_NUM=501 csrc/

# luacheck (.luacheckrc) over every Lua file, one spelling of read formats
# ("*l", "*a": both Lua 5.4 and LuaJIT take it), then lint-c. Zero warnings
# or it fails.
lint:
	@luacheck -q --no-color lua spec bench examples $(wildcard bin/*)
	@! grep -nE 'read *\(? *"[alnL]"' -r lua spec bench examples bin \
	  || { echo 'lint: spell read formats "*l", "*a", "*n"'; exit 1; }
	@$(MAKE) -s lint-c

# eval "$(make -s env)" points lua5.4 (or LUA=luajit) at this checkout.
env: all
	@echo "export LUA_PATH='$(LPATH);;'"
	@echo "export LUA_CPATH='$(CPATH);;'"
	@url=$$(scripts/devdb url 2>/dev/null) && [ -z "$$DATABASE_URL" ] && echo "export DATABASE_URL='$$url'" || true
	@url=$$(scripts/devdb url --owner 2>/dev/null) && [ -z "$$TODODB_OWNER_URL" ] && echo "export TODODB_OWNER_URL='$$url'" || true

install: all
	install -d $(DESTDIR)$(PREFIX)/lib/lua/$(LUA_VER)/tododb $(DESTDIR)$(PREFIX)/share/lua/$(LUA_VER)/tododb/migrations
	install -m 755 $(MODULE) $(DESTDIR)$(PREFIX)/lib/lua/$(LUA_VER)/tododb/core.so
	install -m 644 lua/tododb/*.lua $(DESTDIR)$(PREFIX)/share/lua/$(LUA_VER)/tododb/
	install -m 644 lua/tododb/migrations/*.sql $(DESTDIR)$(PREFIX)/share/lua/$(LUA_VER)/tododb/migrations/

clean:
	rm -rf build

db-start:
	@scripts/devdb start
db-stop:
	@scripts/devdb stop

demo: deps all
	@scripts/devdb start >/dev/null
	@eval "$$($(MAKE) -s env)"; lua5.4 examples/demo.lua

# The JSON API of examples/nginx/ on 127.0.0.1:$PORT (default 8080), in the foreground; Ctrl-C stops.
serve: deps
	@scripts/serve

# Benchmarks against raw libpq, SQLModel and pgbench; writes bench/RESULTS.md.
# QUICK=1 for a run under a minute. Never part of `make test`.
bench: deps
	@$(MAKE) -s LUA=lua5.4 all
	@$(MAKE) -s LUA=luajit all
	@QUICK=$(QUICK) BENCH="$(BENCH)" bench/run

# A real Better Auth against tododb: npm installs the versions pinned in
# interop/package-lock.json into $(INTEROP), then spec/81-betterauth_spec.lua
# runs interop/betterauth.mjs (Node >= 20) on the embedded PostgreSQL.
interop: deps
	@command -v npm >/dev/null || { echo "installing: npm"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }
	@node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' || \
	  { echo "interop: Better Auth needs Node >= 20 (found $$(node --version))"; exit 1; }
	@$(MAKE) -s LUA=lua5.4 all
	@$(MAKE) -s LUA=luajit all
	@mkdir -p $(INTEROP)
	@cp interop/betterauth.mjs $(INTEROP)/
	@cmp -s interop/package-lock.json $(INTEROP)/package-lock.json && [ -d $(INTEROP)/node_modules ] || \
	  { cp interop/package.json interop/package-lock.json $(INTEROP)/ && \
	    cd $(INTEROP) && npm ci --no-audit --no-fund --loglevel=error; }
	@TDB_INTEROP=$(abspath $(INTEROP)) SPECS="spec/81-betterauth_spec.lua spec/82-betterauth_nginx_spec.lua" scripts/run-specs lua5.4 luajit
