#!/usr/bin/python3
"""bench/sqlmodel_bench.py: the original plan's stack on the same workloads.

SQLModel + SQLAlchemy 1.4 + psycopg2 (Debian packages), argon2-cffi for
login, written as a FastAPI + SQLModel application would write them: one
Session per request, select(), ORM objects, commit + refresh after writes.
Role tododb is subject to row-level security, so every transaction first sets
tododb.user_id (an after_begin listener: the idiomatic place, and the one
that keeps refresh() after commit() working).

    /usr/bin/python3 bench/sqlmodel_bench.py WORKLOAD OPS

Same environment as bench/tododb_bench.lua; prints the same RESULT line.
"""
import os
import random
import sys
import time
from datetime import datetime
from typing import Optional
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from sqlalchemy import BigInteger, Column, DateTime, event, func, text
from sqlmodel import Field, Session, SQLModel, create_engine, delete, select


class User(SQLModel, table=True):
    __tablename__ = "users"
    id: Optional[int] = Field(default=None, primary_key=True)
    email: str
    hashed_password: str
    created_at: Optional[datetime] = Field(
        default=None, sa_column=Column(DateTime(timezone=True), server_default=func.now()))
    updated_at: Optional[datetime] = Field(
        default=None, sa_column=Column(DateTime(timezone=True), server_default=func.now()))


class Todo(SQLModel, table=True):
    __tablename__ = "todos"
    # Ids count per user (migration 0002): taken from todo_counters (next_ids).
    id: Optional[int] = Field(
        default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    user_id: int = Field(foreign_key="users.id", primary_key=True)
    title: str
    description: Optional[str] = None
    completed: bool = False
    created_at: Optional[datetime] = Field(
        default=None, sa_column=Column(DateTime(timezone=True), server_default=func.now()))
    updated_at: Optional[datetime] = Field(
        default=None, sa_column=Column(DateTime(timezone=True), server_default=func.now()))


SET_USER = text("SELECT set_config('tododb.user_id', :uid, true)")
NEXT_IDS = text("INSERT INTO todo_counters AS c (user_id, last_id) VALUES (:uid, :n)"
                " ON CONFLICT (user_id) DO UPDATE SET last_id = c.last_id + :n RETURNING c.last_id")


def next_ids(s, uid, n):
    """Reserves n todo ids of user uid; returns the highest."""
    return s.execute(NEXT_IDS, {"uid": uid, "n": n}).scalar_one()


@event.listens_for(Session, "after_begin")
def _row_level_security(session, transaction, connection):
    uid = session.info.get("user_id")
    if uid is not None:
        connection.execute(SET_USER, {"uid": str(uid)})


def engine_url(url):
    """postgresql:///db?host=…  ->  postgresql+psycopg2:///db?host=…"""
    parts = urlsplit(url)
    return "postgresql+psycopg2://" + parts.netloc + parts.path + ("?" + parts.query if parts.query else "")


def status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


env = os.environ
workload, ops = sys.argv[1], int(sys.argv[2])
engine = create_engine(engine_url(env["BENCH_URL"]), pool_size=1, max_overflow=0)
random.seed(7919 * int(env.get("BENCH_WORKER", "1")))

ids = {}
for line in open(env["BENCH_IDS"]):
    u, i = line.split("\t")
    ids.setdefault(int(u), []).append(int(i))
users = list(ids)


def pick():
    u = random.choice(users)
    return u, random.choice(ids[u])


lat = []


def report(n, secs, cpu):
    s = sorted(lat)
    q = lambda p: s[max(0, -(-int(p * 1000 * len(s)) // 1000) - 1)] * 1000
    print("RESULT\t%s\t%d\t%.6f\t%.4f\t%.4f\t%d\t%.2f" % (
        workload, n, secs, q(0.50), q(0.99), status_kb("VmHWM"), cpu / n * 1e6), flush=True)


def run(body, warm=None):
    for i in range(1, (warm if warm is not None else min(200, max(10, ops // 10))) + 1):
        body(-i)
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(1, ops + 1):
        a = time.perf_counter()
        body(i)
        lat.append(time.perf_counter() - a)
    report(ops, time.perf_counter() - t0, time.process_time() - c0)


# ---- the application code: one function per API operation --------------------

def get_todo(uid, todo_id):
    with Session(engine, info={"user_id": uid}) as s:
        todo = s.exec(select(Todo).where(Todo.user_id == uid, Todo.id == todo_id)).first()
        assert todo is not None
        return todo


def create_todo(uid, title, description=None):
    with Session(engine, info={"user_id": uid}) as s:
        todo = Todo(id=next_ids(s, uid, 1), user_id=uid, title=title, description=description)
        s.add(todo)
        s.commit()
        s.refresh(todo)
        return todo


def update_todo(uid, todo_id, completed=None):
    """Sets completed (None: toggles it)."""
    with Session(engine, info={"user_id": uid}) as s:
        todo = s.exec(select(Todo).where(Todo.user_id == uid, Todo.id == todo_id)).first()
        assert todo is not None
        todo.completed = (not todo.completed) if completed is None else completed
        s.add(todo)
        s.commit()
        s.refresh(todo)
        return todo


def delete_todo(uid, todo_id):
    with Session(engine, info={"user_id": uid}) as s:
        todo = s.exec(select(Todo).where(Todo.user_id == uid, Todo.id == todo_id)).first()
        assert todo is not None
        s.delete(todo)
        s.commit()


def list_todos(uid, limit=50, after=None):
    """Keyset page, newest first: (items, next cursor)."""
    with Session(engine, info={"user_id": uid}) as s:
        q = select(Todo).where(Todo.user_id == uid)
        if after is not None:
            q = q.where(Todo.id < after)
        rows = s.exec(q.order_by(Todo.id.desc()).limit(limit + 1)).all()
        items = rows[:limit]
        return items, (items[-1].id if len(rows) > limit else None)


def count_todos(uid):
    with Session(engine, info={"user_id": uid}) as s:
        return s.exec(select(func.count()).select_from(Todo).where(Todo.user_id == uid)).one()


# argon2id with libsodium's "interactive" cost (t=2, m=64 MiB, p=1), so the
# hashes tododb made verify and need no rehash.
hasher = PasswordHasher(time_cost=2, memory_cost=65536, parallelism=1, hash_len=32, salt_len=16)


def authenticate(email, password):
    with Session(engine) as s:
        user = s.exec(select(User).where(func.lower(func.btrim(User.email)) == email.strip().lower())).first()
        if user is None:
            return None
        hasher.verify(user.hashed_password, password)
        if hasher.check_needs_rehash(user.hashed_password):
            user.hashed_password = hasher.hash(password)
            s.add(user)
            s.commit()
        return user


def import_todos(uid, items):
    with Session(engine, info={"user_id": uid}) as s:
        last = next_ids(s, uid, len(items))
        first = last - len(items) + 1
        s.add_all([Todo(id=first + k, user_id=uid, **it) for k, it in enumerate(items)])
        s.commit()
        return len(items)


def clear_user(uid):
    with Session(engine, info={"user_id": uid}) as s:
        s.exec(delete(Todo).where(Todo.user_id == uid))
        s.commit()


# ---- workloads ----------------------------------------------------------------

def w_get():
    run(lambda i: get_todo(*pick()))


def w_create():
    run(lambda i: create_todo(random.choice(users), "Bench todo %d" % i, "created by the benchmark"))


def w_toggle():
    def body(i):
        u, t = pick()
        update_todo(u, t)
    run(body)


def w_list():
    def body(i):
        items, _ = list_todos(random.choice(users))
        assert len(items) == 50
    run(body)


def w_deep():
    u = users[0]
    after = None
    for _ in range(int(env.get("BENCH_DEEP", "9950")) // 50):
        _, after = list_todos(u, 50, after)

    def body(i):
        items, _ = list_todos(u, 50, after)
        assert len(items) == 50
    run(body)


def w_count():
    run(lambda i: count_todos(random.choice(users)) >= 10000 or sys.exit("count"))


def w_auth():
    email, pw = env["BENCH_EMAIL"], env["BENCH_PASSWORD"]
    run(lambda i: authenticate(email, pw) or sys.exit("login failed"), 1)


def w_bulk():
    uid = int(env["BENCH_BULK_USER"])
    n = int(env.get("BENCH_BULK_ROWS", "100000"))
    items = [{"title": "Imported todo %d" % i, "completed": i % 5 == 0,
              "description": "Imported description %d" % i if i % 3 == 0 else None}
             for i in range(1, n + 1)]
    import_todos(uid, items[:10])
    cpu = 0.0
    for _ in range(ops):
        clear_user(uid)
        c, a = time.process_time(), time.perf_counter()
        assert import_todos(uid, items) == n
        lat.append(time.perf_counter() - a)
        cpu += time.process_time() - c
    report(ops, sum(lat), cpu)
    clear_user(uid)


def w_mixed():
    mine = []

    def create(i):
        u = random.choice(users)
        mine.append((u, create_todo(u, "Mixed todo %d" % i).id))

    def remove(i):
        j = random.randrange(len(mine))
        mine[j], mine[-1] = mine[-1], mine[j]
        delete_todo(*mine.pop())

    table = [lambda i: get_todo(*pick()),
             lambda i: list_todos(random.choice(users)),
             lambda i: update_todo(*pick(), i % 2 == 0),
             create, remove]

    def choose(r):
        return table[0 if r < 0.35 else 1 if r < 0.70 else 2 if r < 0.825 else 3 if r < 0.95 else 4]

    for i in range(1, 51):
        create(-i)
    for i in range(1, 101):
        choose(random.random())(-i)
    start = env.get("BENCH_START_AT")
    if start:
        while time.time() < float(start):
            time.sleep(0.001)
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(1, ops + 1):
        f = choose(random.random())
        a = time.perf_counter()
        f(i)
        lat.append(time.perf_counter() - a)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    with open(env["BENCH_LATFILE"], "w") as out:
        out.writelines("%.4f\n" % (x * 1000) for x in lat)
    report(ops, secs, cpu)


WORKLOADS = {"get": w_get, "create": w_create, "toggle": w_toggle, "list": w_list,
             "deep": w_deep, "count": w_count, "auth": w_auth, "bulk": w_bulk, "mixed": w_mixed}

if workload not in WORKLOADS:
    sys.exit("sqlmodel_bench: unknown workload %s" % workload)
WORKLOADS[workload]()
