"""An ADBC Flight SQL session against `sluice serve --flight`, printed as JSON: a refused
anonymous query, a query with predict, a prepared statement with a `?` parameter, the catalog
(GetObjects), a bulk ingest refused to USER, then, with the bearer TOKEN, done and read back.
Usage: adbc-client.py URI USER PASSWORD MODEL TOKEN"""
import json
import sys
import warnings

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow as pa

warnings.simplefilter("ignore")
uri, user, password, model, token = sys.argv[1:6]
out = {}
try:
    with flight_sql.connect(uri) as conn:
        cur = conn.cursor()
        cur.execute("SELECT 1")
        cur.fetchall()
    out["anonymous"] = "accepted"
except Exception as e:  # the refusal is the point
    out["anonymous"] = str(e).splitlines()[0]

with flight_sql.connect(uri, db_kwargs={"username": user, "password": password}) as conn:
    cur = conn.cursor()
    cur.execute(f"SELECT id, a, b, c, predict('{model}', a, b, c) AS p FROM events ORDER BY id")
    table = cur.fetch_arrow_table()
    out["predict_type"] = str(table.schema.field("p").type)
    out["rows"] = table.to_pylist()
    cur.execute("SELECT COUNT(*) AS n FROM events WHERE id < ?", parameters=(100,))
    out["prepared"] = cur.fetchall()[0][0]
    objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    out["tables"] = {
        t["table_name"]: [c["column_name"] for c in (t["table_columns"] or [])]
        for catalog in objects
        for schema in catalog["catalog_db_schemas"]
        for t in schema["db_schema_tables"]
    }
    uploads = pa.table({"k": [3, 1, 2], "s": ["z", "x", "y"]})
    try:
        cur.adbc_ingest("from_adbc", uploads, mode="create_append")
        out["reader_ingest"] = "accepted"
    except Exception as e:  # a reader may not write
        out["reader_ingest"] = str(e).splitlines()[0]

with flight_sql.connect(uri, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {token}"}) as conn:
    cur = conn.cursor()
    out["ingested"] = cur.adbc_ingest("from_adbc", uploads, mode="create_append")
    cur.execute("SELECT k, s FROM from_adbc ORDER BY k")
    out["read_back"] = [list(r) for r in cur.fetchall()]
print(json.dumps(out))
