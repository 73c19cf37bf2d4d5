"""SQLAlchemy Core (psycopg 3 dialect) against ebb: create a table from
metadata, insert with parameters (executemany), INSERT … RETURNING, UPDATE
with an expression, SELECT, count, and the inspector's table listing.

Not yet covered because ebb lacks it: reflecting a table
(`Table(..., autoload_with=engine)` reads `pg_index.indkey` as an array and
uses correlated scalar subqueries DataFusion cannot plan) and autoincrement
integer primary keys (SERIAL needs sequences).

Run by the end-to-end test `sqlalchemy_core_creates_writes_and_reads` with
the port as the only argument; exits non-zero with a traceback on failure.
"""

import sys

from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, func, insert, inspect, select, update

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
print("sqlalchemy ok")
