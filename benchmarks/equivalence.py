"""Are the fused engine's results the reference Keras engine's? The evidence, over several seeds.

    python benchmarks/equivalence.py --data-dir ../shared/datasets --seeds 5

Trains the full Boston grid (72 cells) and an MNIST slice (the sample profile's 5,000-image subsample)
with both engines for each seed, on the same preprocessed splits, then for each cell compares the test
metric over the seeds with a Welch t-test, Holm-corrected across cells, and gives the mean difference
(fused - keras) across cells with a 95 % confidence interval. Keras trials run in 2 processes (one
TensorFlow thread each) to halve the wait; nothing here is timed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import itertools
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

MNIST_SLICE = {"hidden_layers": [1, 2], "units": [32, 64], "activation": ["relu"], "epochs": [5],
               "batch_size": [128]}


def _one_thread() -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def _keras_rows(job) -> list[dict]:
    from tasks import results, train

    arrays, kwargs, spec = job
    outcome = train.fit_and_evaluate(arrays, spec, **kwargs)
    return results.trial_rows(spec, outcome, target="-", data_digest="-", engine="keras")


def trials_for(experiment: str, grid: dict, seeds: int):
    from schemas.study import TrialSpec, load_study

    spec = load_study().experiments[experiment]
    return [TrialSpec(experiment=experiment, dataset=spec.dataset, task=spec.task, hidden_layers=h, units=u,
                      activation=a, epochs=e, batch_size=b, seed=s)
            for h, u, a, e, b in itertools.product(grid["hidden_layers"], grid["units"], grid["activation"],
                                                   grid["epochs"], grid["batch_size"]) for s in range(seeds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--processes", type=int, default=2, help="processes for the Keras engine's trials")
    parser.add_argument("--csv", type=Path, help="also write the per-cell comparison to this CSV file")
    options = parser.parse_args()

    from schemas.study import load_study
    from tasks import fused, results
    from tasks.equivalence import compare
    from tasks.preprocess import prepare_local

    boston_grid = load_study().experiments["boston"].grid.model_dump()
    tables = []
    for experiment, grid, metric in (("boston", boston_grid, "rmse"), ("mnist", MNIST_SLICE, "f1")):
        arrays, kwargs = prepare_local(experiment, options.data_dir.resolve())
        trials = trials_for(experiment, grid, options.seeds)
        fused_rows = []
        for group in fused.fusion_groups(trials):
            outcomes = fused.train_group(arrays, group, **kwargs)
            for spec in group:
                fused_rows += results.trial_rows(spec, outcomes[spec.digest()], target="-", data_digest="-",
                                                 engine="fused")
        # Fresh (spawned) processes: a forked one would inherit this process's TensorFlow, already running.
        with ProcessPoolExecutor(options.processes, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_one_thread) as pool:
            keras_rows = [row for rows in pool.map(_keras_rows, [(arrays, kwargs, t) for t in trials])
                          for row in rows]
        result = compare(pd.DataFrame(fused_rows), pd.DataFrame(keras_rows), metric)
        print(f"{experiment}: {result.summary()}", flush=True)
        tables.append(result.cells.assign(metric=metric))
        worst = result.cells.sort_values("p").head(3)
        print(worst[["hidden_layers", "units", "activation", "epochs", "batch_size", "mean_a", "mean_b",
                     "p", "p_holm"]].to_string(index=False), flush=True)
    if options.csv:
        pd.concat(tables).to_csv(options.csv, index=False)


if __name__ == "__main__":
    main()
