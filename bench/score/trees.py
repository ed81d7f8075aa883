"""The tree-model side of the batch-scoring bench.

    trees.py model OUT.onnx TREES      a LightGBM regressor of TREES trees (31 leaves) on the
                                       bench's 32 features, trained on 100k synthetic rows with a
                                       fixed seed and converted to ONNX (onnxmltools); idempotent
    trees.py ENGINE DATA MODEL OUT     one scoring run: raw (pyarrow + onnxruntime in one
                                       process), daft or spark, each with one onnxruntime session
                                       per worker; prints `rows seconds` from first read to last
                                       output file
"""
import glob
import os
import shutil
import sys
import time

FEATURES = [f"f{i}" for i in range(32)]
BATCH = 8192
threads = int(os.environ.get("BENCH_THREADS", os.cpu_count() or 2))


def make_model(out, trees):
    if os.path.exists(out):
        return
    import lightgbm
    import numpy as np
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    rng = np.random.default_rng(3)
    x = rng.standard_normal((100_000, 32), dtype=np.float32)
    y = x[:, 0] * 2 - x[:, 1] ** 2 + np.sin(x[:, 2] * 3) + x[:, 3] * x[:, 4] + rng.normal(scale=0.1, size=100_000)
    model = lightgbm.LGBMRegressor(n_estimators=trees, num_leaves=31, learning_rate=0.05, verbose=-1).fit(x, y)
    onx = onnxmltools.convert_lightgbm(model, initial_types=[("input", FloatTensorType([None, 32]))], target_opset=15)
    with open(out + ".tmp", "wb") as f:
        f.write(onx.SerializeToString())
    os.rename(out + ".tmp", out)
    print(f"model {out}: LightGBM regressor, {trees} trees", file=sys.stderr)


def session(model, intra):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = intra
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def score(sess, columns):
    import numpy as np

    x = np.stack(columns, axis=1)
    return sess.run(None, {"input": x})[0].reshape(-1)


def written(out):
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in glob.glob(f"{out}/**/*.parquet", recursive=True))


def run(engine, data, model, out):
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    files = sorted(glob.glob(f"{data}/*.parquet"))
    start = time.time()
    if engine == "raw":
        import pyarrow as pa
        import pyarrow.parquet as pq

        sess = session(model, threads)
        rows = 0
        for i, path in enumerate(files):
            parts = []
            for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH, columns=["id"] + FEATURES):
                cols = [batch.column(c).to_numpy() for c in FEATURES]
                parts.append(pa.table({"id": batch.column("id"), "score": score(sess, cols)}))
                rows += batch.num_rows
            pq.write_table(pa.concat_tables(parts), f"{out}/part-{i}.parquet")
    elif engine == "daft":
        import daft

        @daft.udf(return_dtype=daft.DataType.float32(), batch_size=BATCH)
        class Score:
            def __init__(self):
                self.sess = session(model, threads)

            def __call__(self, *cols):
                return score(self.sess, [c.to_arrow().to_numpy(zero_copy_only=False) for c in cols])

        df = daft.read_parquet(f"{data}/*.parquet")
        df = df.select(df["id"], Score(*[df[c] for c in FEATURES]).alias("score"))
        df.write_parquet(out)
        rows = written(out)
    elif engine == "spark":
        import numpy as np
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
        state = {}

        @pandas_udf("float")
        def udf(*cols: pd.Series) -> pd.Series:
            if "sess" not in state:
                state["sess"] = session(model, 1)
            return pd.Series(score(state["sess"], [c.to_numpy(dtype=np.float32) for c in cols]))

        df = spark.read.parquet(data)
        df.select("id", udf(*[df[c] for c in FEATURES]).alias("score")).write.mode("overwrite").parquet(out)
        rows = spark.read.parquet(out).count()
    else:
        sys.exit(f"unknown engine {engine}: use raw, daft or spark")
    print(rows, time.time() - start)


if __name__ == "__main__":
    if sys.argv[1] == "model":
        make_model(sys.argv[2], int(sys.argv[3]))
    else:
        run(*sys.argv[1:5])
