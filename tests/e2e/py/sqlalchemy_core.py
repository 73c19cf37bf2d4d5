"""SQLAlchemy Core (psycopg 3 dialect) against ebb: create a table from
metadata, insert with parameters (executemany), INSERT … RETURNING, UPDATE
with an expression, SELECT, count, the inspector's table listing, and
reflecting tables (`Table(..., autoload_with=engine)` and the inspector's
columns, keys, indexes and constraints) back into metadata that works, and
autoincrement keys (SERIAL, ids returned to `inserted_primary_key`,
reflected as autoincrement with their sequence) and IDENTITY columns with
options.

Run by the end-to-end test `sqlalchemy_core_creates_writes_and_reads` with
the port as the only argument; exits non-zero with a traceback on failure.
"""

import sys

from sqlalchemy import BigInteger, Column, Identity, Integer, MetaData, Numeric, String, Table, Text, create_engine, func, insert, inspect, select, text, update

engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{int(sys.argv[1])}/postgres")
md = MetaData()
items = Table(
    "sa_items",
    md,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(50), nullable=False),
    Column("qty", Integer),
)
md.create_all(engine)

with engine.begin() as c:
    c.execute(insert(items), [{"id": 1, "name": "ann", "qty": 1}, {"id": 2, "name": "bob", "qty": 2}])
    returned = c.execute(insert(items).values(id=3, name="cy", qty=3).returning(items.c.id, items.c.name)).all()
    assert returned == [(3, "cy")], returned
    c.execute(update(items).where(items.c.id == 1).values(qty=items.c.qty + 10))

with engine.connect() as c:
    rows = c.execute(select(items.c.id, items.c.name, items.c.qty).order_by(items.c.id)).all()
    assert rows == [(1, "ann", 11), (2, "bob", 2), (3, "cy", 3)], rows
    assert c.execute(select(func.count()).select_from(items)).scalar() == 3

inspector = inspect(engine)
assert "sa_items" in inspector.get_table_names(), inspector.get_table_names()
assert inspector.has_table("sa_items")
assert not inspector.has_table("nope")
# Reflection: a table created in SQL, read back as metadata.
with engine.begin() as c:
    c.execute(text(
        "CREATE TABLE sa_orders (region varchar(8) NOT NULL, id int, total numeric(10,2) DEFAULT 0, "
        "note text, qty bigint DEFAULT 5, PRIMARY KEY (region, id))"
    ))
columns = {c["name"]: c for c in inspector.get_columns("sa_orders")}
assert list(columns) == ["region", "id", "total", "note", "qty"], list(columns)
assert isinstance(columns["region"]["type"], String) and columns["region"]["type"].length == 8, columns["region"]
assert isinstance(columns["total"]["type"], Numeric) and (columns["total"]["type"].precision, columns["total"]["type"].scale) == (10, 2)
assert isinstance(columns["note"]["type"], Text)
assert isinstance(columns["qty"]["type"], BigInteger)
assert not columns["region"]["nullable"] and not columns["id"]["nullable"] and columns["note"]["nullable"]
assert columns["qty"]["default"] == "5" and columns["note"]["default"] is None, columns
pk = inspector.get_pk_constraint("sa_orders")
assert pk["constrained_columns"] == ["region", "id"] and pk["name"] == "sa_orders_pkey", pk
assert inspector.get_indexes("sa_orders") == [], inspector.get_indexes("sa_orders")
assert inspector.get_foreign_keys("sa_orders") == []
assert inspector.get_unique_constraints("sa_orders") == []

reflected = MetaData()
orders = Table("sa_orders", reflected, autoload_with=engine)
assert [c.name for c in orders.primary_key.columns] == ["region", "id"]
items_back = Table("sa_items", reflected, autoload_with=engine)
assert items_back.c.name.type.length == 50 and not items_back.c.name.nullable
with engine.begin() as c:
    c.execute(insert(orders).values(region="eu", id=1, total=9.5))
    c.execute(insert(orders).values(region="us", id=1, note="x"))
with engine.connect() as c:
    rows = c.execute(select(orders.c.region, orders.c.total, orders.c.qty).order_by(orders.c.region)).all()
    assert [(r, str(t), q) for r, t, q in rows] == [("eu", "9.50", 5), ("us", "0.00", 5)], rows
    assert c.execute(select(func.count()).select_from(items_back)).scalar() == 3

# Autoincrement keys: SERIAL from metadata, each row's id from its sequence.
people = Table("sa_people", md, Column("id", Integer, primary_key=True), Column("name", Text))
md.create_all(engine)
with engine.begin() as c:
    r = c.execute(insert(people).values(name="ann"))
    assert tuple(r.inserted_primary_key) == (1,), r.inserted_primary_key
    c.execute(insert(people), [{"name": "bob"}, {"name": "cy"}])
with engine.connect() as c:
    rows = c.execute(select(people.c.id, people.c.name).order_by(people.c.id)).all()
    assert rows == [(1, "ann"), (2, "bob"), (3, "cy")], rows
fresh = inspect(engine)
id_column = {c["name"]: c for c in fresh.get_columns("sa_people")}["id"]
assert id_column["autoincrement"] is True and id_column["default"] == "nextval('sa_people_id_seq'::regclass)", id_column
assert "sa_people_id_seq" in fresh.get_sequence_names(), fresh.get_sequence_names()
assert "sa_people_id_seq" not in fresh.get_table_names(), fresh.get_table_names()

# IDENTITY with options (SQLAlchemy writes START before MINVALUE), reflected back.
tickets = Table("sa_tickets", md, Column("id", Integer, Identity(start=10, minvalue=1, increment=5), primary_key=True), Column("what", Text))
md.create_all(engine)
with engine.begin() as c:
    c.execute(insert(tickets), [{"what": "a"}, {"what": "b"}])
    assert c.execute(select(tickets.c.id).order_by(tickets.c.id)).scalars().all() == [10, 15]
# (Its options reflect as JSON text, not an object: json_build_object's
# json type does not survive the CASE around it in SQLAlchemy's query.)
ticket_id = {c["name"]: c for c in inspect(engine).get_columns("sa_tickets")}["id"]
assert ticket_id["identity"] and ticket_id["default"] is None and not ticket_id["nullable"], ticket_id

print("sqlalchemy ok")
