"""Batch a folder of clips, then ask the results questions in SQL.

    python examples/batch_and_query.py [OUT]
"""

import subprocess
import sys
from pathlib import Path

import duckdb

here = Path(__file__).parent
out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/example_batch")

# 1. one command turns the folder into Parquet tables (exit 0: every clip succeeded)
subprocess.run(["onepass", "run", str(here / "clips"), "-o", str(out)], check=True)

# 2. every table is one glob away, in DuckDB (or pyarrow, or polars)
con = duckdb.connect()
for table, file in [("sources", "source"), ("captions", "captions"), ("transcripts", "transcripts"), ("speakers", "speakers")]:
    con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{out}/sources/*/{file}.parquet')")

print(con.sql("SELECT source_id, status, duration_ms FROM sources ORDER BY source_id"))
print(con.sql("""
    SELECT source_id, speaker, count(*) AS turns, sum(end_ms - start_ms) / 1000 AS seconds
    FROM speakers GROUP BY ALL ORDER BY source_id, speaker"""))
print(con.sql("SELECT source_id, start_ms, end_ms, speaker, text FROM transcripts ORDER BY source_id, start_ms LIMIT 10"))
