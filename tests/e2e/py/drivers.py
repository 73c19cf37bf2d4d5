"""psycopg 3 against ebb (SQLAlchemy Core: see sqlalchemy_core.py).

Run by the end-to-end test `psycopg_connects_writes_and_reads` with the
compute's port as the only argument. Every step asserts what it reads back;
an exception or a failed assertion exits non-zero with the traceback.
"""

import decimal
import sys

import psycopg

port = int(sys.argv[1])
dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"

# psycopg 3: parameters go through the extended protocol with typed binds.
with psycopg.connect(dsn, autocommit=True) as conn:
    conn.execute("CREATE TABLE py_items (id integer PRIMARY KEY, name text NOT NULL, price numeric(10,2), ok boolean)")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO py_items (id, name, price, ok) VALUES (%s, %s, %s, %s)",
            [(1, "apple", decimal.Decimal("1.50"), True), (2, "pear", decimal.Decimal("2.25"), False), (3, "fig", None, None)],
        )
        cur.execute("SELECT id, name, price, ok FROM py_items WHERE id >= %s ORDER BY id", (2,))
        rows = cur.fetchall()
        assert rows == [(2, "pear", decimal.Decimal("2.25"), False), (3, "fig", None, None)], rows
        cur.execute("UPDATE py_items SET name = %s WHERE id = %s", ("plum", 3))
        assert cur.rowcount == 1, cur.rowcount
        cur.execute("SELECT name FROM py_items WHERE id = %s", (3,))
        assert cur.fetchone() == ("plum",)
        # A multiple-column SET item with typed parameters (and DEFAULT).
        cur.execute("UPDATE py_items SET (name, price, ok) = (%s, %s, DEFAULT) WHERE id = %s", ("date", decimal.Decimal("3.10"), 3))
        assert cur.rowcount == 1, cur.rowcount
        cur.execute("SELECT name, price, ok FROM py_items WHERE id = %s", (3,))
        assert cur.fetchone() == ("date", decimal.Decimal("3.10"), None)

# A transaction the driver opens and commits, and one it rolls back.
with psycopg.connect(dsn) as conn:
    conn.execute("INSERT INTO py_items (id, name) VALUES (%s, %s)", (4, "kiwi"))
    conn.commit()
    conn.execute("INSERT INTO py_items (id, name) VALUES (%s, %s)", (5, "lime"))
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM py_items").fetchone() == (4,)

print("drivers ok")
