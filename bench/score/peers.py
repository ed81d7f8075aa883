"""One scoring run of a peer on the bench input: ENGINE (raw, daft, ray, spark), the input
directory, the TorchScript model, the output directory. Prints `rows seconds` measured from
the first read to the last output file; every engine loads the model once per worker."""
import glob
import os
import shutil
import sys
import time

engine, data, model, out = sys.argv[1:5]
threads = int(os.environ.get("BENCH_THREADS", os.cpu_count() or 2))
FEATURES = [f"f{i}" for i in range(32)]
BATCH = 8192
shutil.rmtree(out, ignore_errors=True)
os.makedirs(out)
files = sorted(glob.glob(f"{data}/*.parquet"))


def load():
    import torch

    torch.set_num_threads(threads)
    return torch.jit.load(model).eval()


def score_table(net, table):
    import numpy as np
    import torch

    x = np.stack([table.column(c).to_numpy() for c in FEATURES], axis=1)
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()[:, 0]


start = time.time()
if engine == "raw":
    import pyarrow as pa
    import pyarrow.parquet as pq

    net = load()
    rows = 0
    for i, path in enumerate(files):
        parts = []
        for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH, columns=["id"] + FEATURES):
            t = pa.Table.from_batches([batch])
            parts.append(pa.table({"id": t.column("id"), "score": score_table(net, t)}))
            rows += batch.num_rows
        pq.write_table(pa.concat_tables(parts), f"{out}/part-{i}.parquet")
elif engine == "daft":
    import daft
    import numpy as np

    @daft.udf(return_dtype=daft.DataType.float32(), batch_size=BATCH)
    class Score:
        def __init__(self):
            self.net = load()

        def __call__(self, *cols):
            import torch

            x = np.stack([c.to_arrow().to_numpy(zero_copy_only=False) for c in cols], axis=1)
            with torch.no_grad():
                return self.net(torch.from_numpy(x)).numpy()[:, 0]

    df = daft.read_parquet(f"{data}/*.parquet")
    df = df.select(df["id"], Score(*[df[c] for c in FEATURES]).alias("score"))
    df.write_parquet(out)
    import pyarrow.parquet as pq

    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in glob.glob(f"{out}/**/*.parquet", recursive=True))
elif engine == "ray":
    import ray

    ray.init(num_cpus=threads, include_dashboard=False, log_to_driver=False)

    class Score:
        def __init__(self):
            self.net = load()

        def __call__(self, batch):
            import numpy as np
            import torch

            x = np.stack([batch[c] for c in FEATURES], axis=1)
            with torch.no_grad():
                return {"id": batch["id"], "score": self.net(torch.from_numpy(x)).numpy()[:, 0]}

    ds = ray.data.read_parquet(data)
    ds = ds.map_batches(Score, batch_size=BATCH, concurrency=threads, num_cpus=0.5, batch_format="numpy")
    ds.write_parquet(out)
    import pyarrow.parquet as pq

    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in glob.glob(f"{out}/**/*.parquet", recursive=True))
elif engine == "spark":
    import pandas as pd
    from pyspark.sql import SparkSession
    from pyspark.sql.functions import pandas_udf

    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    spark = (
        SparkSession.builder.master(f"local[{threads}]")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", BATCH)
        .config("spark.driver.memory", "4g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    start = time.time()
    state = {}

    @pandas_udf("float")
    def score(*cols: pd.Series) -> pd.Series:
        import numpy as np
        import torch

        if "net" not in state:
            torch.set_num_threads(1)
            state["net"] = torch.jit.load(model).eval()
        x = np.stack([c.to_numpy(dtype=np.float32) for c in cols], axis=1)
        with torch.no_grad():
            return pd.Series(state["net"](torch.from_numpy(x)).numpy()[:, 0])

    df = spark.read.parquet(data)
    df.select("id", score(*[df[c] for c in FEATURES]).alias("score")).write.mode("overwrite").parquet(out)
    rows = spark.read.parquet(out).count()
else:
    sys.exit(f"unknown engine {engine}")
print(rows, time.time() - start)
