"""Reads an edgeflow output table with pyarrow, DuckDB and Polars and prints what each saw.

Usage: read_outputs.py <table folder>
Prints one JSON object: per reader, the row count, column names and types, the sum of an
integer column, and the distinct hive partitions.
"""
import json
import sys

import duckdb
import polars as pl
import pyarrow.dataset as ds

folder = sys.argv[1]
out = {}

table = ds.dataset(folder, format="parquet", partitioning="hive").to_table()
out["pyarrow"] = {
    "rows": table.num_rows,
    "columns": [f"{f.name}:{f.type}" for f in table.schema],
    "readings": int(table.column("readings").to_pylist() and sum(table.column("readings").to_pylist())),
    "partitions": sorted({f"{d}/{h}" for d, h in zip(table.column("date").to_pylist(), table.column("hour").to_pylist())}),
}

glob = f"{folder}/**/*.parquet"
con = duckdb.connect()
rows, readings = con.execute(f"select count(*), sum(readings) from read_parquet('{glob}', hive_partitioning=true)").fetchone()
types = con.execute(f"describe select * from read_parquet('{glob}', hive_partitioning=true)").fetchall()
parts = con.execute(f"select distinct date::varchar || '/' || hour::varchar from read_parquet('{glob}', hive_partitioning=true) order by 1").fetchall()
out["duckdb"] = {
    "rows": rows,
    "columns": [f"{name}:{ty}" for name, ty, *_ in types],
    "readings": int(readings),
    "partitions": [p[0] for p in parts],
}

df = pl.scan_parquet(glob, hive_partitioning=True).collect()
out["polars"] = {
    "rows": df.height,
    "columns": [f"{name}:{ty}" for name, ty in df.schema.items()],
    "readings": int(df["readings"].sum()),
    "partitions": sorted({f"{d}/{h}" for d, h in zip(df["date"].to_list(), df["hour"].to_list())}),
}
print(json.dumps(out))
