"""The fused engine against a plain Keras loop and against nnstudy's reference Keras engine.

    python benchmarks/vs_plain_keras.py --data-dir ../shared/datasets

One grid slice, one seed, run three ways in this process tree:

1. a plain sequential Keras loop written the way the published study would be (one `Sequential` per cell,
   `fit(epochs=E, batch_size=B)`), implemented below with its own data loading and nothing from nnstudy;
2. `nnstudy run --engine keras` (one Prefect task and one Keras model per cell);
3. `nnstudy run --engine fused` (one Prefect task per fusion group), then again with nothing changed:
   the same command (answered by the up-to-date check) and with `--force` (the flow, all cached);
   and once more with the sample profile's three seeds on its own empty state root, timed per seed.

The slice is the full Boston grid (72 cells) and an MNIST slice (8 cells on the 5,000-image subsample) of
the sample profile. nnstudy runs against one loopback Prefect server started here (as a deployment would),
each with an empty state root. Prints each wall time, also per seed, the training tasks' own time (from
their `trained in` log lines), the ratios, peak RSS, the largest metric differences, the cached rerun's
time, and Prefect's orchestration overhead (flow-run time not spent inside task runs).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import re
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import NNSTUDY, ROOT, clean_env, prefect_server, run_measured  # noqa: E402

MNIST_SLICE = {"hidden_layers": [1, 2], "units": [32, 64], "epochs": [5, 10], "batch_size": [128]}
BOSTON_COLUMNS = 14


# -- 1. the plain loop: what a course notebook does, with no nnstudy code ---------------------------------

def plain_boston(data_dir: Path) -> tuple[np.ndarray, ...]:
    """housing.data, Keras' boston_housing split (RandomState(113), 80 %), standardised with train stats."""
    values = np.array(data_dir.joinpath("boston", "housing.data").read_text().split(), dtype=float)
    values = values.reshape(-1, BOSTON_COLUMNS)
    order = np.arange(len(values))
    np.random.RandomState(113).shuffle(order)
    n_train = int(len(values) * 0.8)
    train, test = values[order[:n_train]], values[order[n_train:]]
    mean, std = train[:, :-1].mean(axis=0), train[:, :-1].std(axis=0)
    y_mean, y_std = train[:, -1].mean(), train[:, -1].std()
    return ((train[:, :-1] - mean) / std, (train[:, -1] - y_mean) / y_std, (test[:, :-1] - mean) / std,
            test[:, -1], y_mean, y_std)


def _idx(path: Path) -> np.ndarray:
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    dims = raw[3]
    shape = struct.unpack(f">{dims}I", raw[4:4 + 4 * dims])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def plain_mnist(data_dir: Path) -> tuple[np.ndarray, ...]:
    folder = next(p for p in (data_dir / "mnist", data_dir / "mnist-5k") if p.is_dir())
    files = {p.name.split("-")[0] + "-" + p.name.split("-")[1]: p for p in folder.iterdir() if "idx" in p.name}
    x_train = _idx(files["train-images"]).reshape(-1, 784) / 255.0
    x_test = _idx(files["t10k-images"]).reshape(-1, 784) / 255.0
    return x_train, _idx(files["train-labels"]), x_test, _idx(files["t10k-labels"])


def plain_loop(data_dir: Path, dataset: str, boston_grid: dict, mnist_grid: dict, seed: int) -> list[dict]:
    import itertools

    import keras

    rows = []
    if dataset == "mnist":
        return plain_mnist_loop(data_dir, mnist_grid, seed)
    x, y, x_test, y_test, y_mean, y_std = plain_boston(data_dir)
    for layers, units, activation, epochs, batch in itertools.product(
            boston_grid["hidden_layers"], boston_grid["units"], boston_grid["activation"], boston_grid["epochs"],
            boston_grid["batch_size"]):
        keras.utils.set_random_seed(seed)
        model = keras.Sequential([keras.Input((x.shape[1],))]
                                 + [keras.layers.Dense(units, activation=activation) for _ in range(layers)]
                                 + [keras.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
        model.fit(x, y, epochs=epochs, batch_size=batch, verbose=0)
        predicted = model.predict(x_test, verbose=0).ravel() * y_std + y_mean
        rows.append(dict(experiment="boston", hidden_layers=layers, units=units, activation=activation,
                         epochs=epochs, batch_size=batch, metric="rmse",
                         value=float(np.sqrt(np.mean((predicted - y_test) ** 2)))))
    return rows


def plain_mnist_loop(data_dir: Path, mnist_grid: dict, seed: int) -> list[dict]:
    import itertools

    import keras

    rows = []
    x, y, x_test, y_test = plain_mnist(data_dir)
    for layers, units, epochs, batch in itertools.product(mnist_grid["hidden_layers"], mnist_grid["units"],
                                                          mnist_grid["epochs"], mnist_grid["batch_size"]):
        keras.utils.set_random_seed(seed)
        model = keras.Sequential([keras.Input((784,))]
                                 + [keras.layers.Dense(units, activation="relu") for _ in range(layers)]
                                 + [keras.layers.Dense(10, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(x, y, epochs=epochs, batch_size=batch, verbose=0)
        predicted = model.predict(x_test, verbose=0).argmax(axis=1)
        f1s = []
        for c in range(10):
            tp = np.sum((predicted == c) & (y_test == c))
            precision = tp / max(np.sum(predicted == c), 1)
            recall = tp / max(np.sum(y_test == c), 1)
            f1s.append(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
        rows.append(dict(experiment="mnist", hidden_layers=layers, units=units, activation="relu", epochs=epochs,
                         batch_size=batch, metric="f1", value=float(np.mean(f1s))))
    return rows


# -- 2./3. nnstudy through its CLI ------------------------------------------------------------------------------

def orchestration_overhead(api_url: str) -> tuple[float, float]:
    """(seconds of the latest `nnstudy` flow run, seconds of it not spent inside any task run).

    Task runs of its trials subflow count as work; the subflow's own bookkeeping counts as overhead.
    """
    os.environ["PREFECT_API_URL"] = api_url
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId,
                                                FlowRunFilterParentFlowRunId)
    from prefect.client.schemas.sorting import FlowRunSort

    async def read():
        async with get_client() as client:
            run = (await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["nnstudy"])),
                                               sort=FlowRunSort.START_TIME_DESC, limit=1))[0]
            children = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])))
            wrappers = {child.parent_task_run_id for child in children}
            ids = [run.id] + [child.id for child in children]
            tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
            flow_seconds = (run.end_time - run.start_time).total_seconds()
            busy = sum((t.end_time - t.start_time).total_seconds() for t in tasks
                       if t.start_time and t.end_time and t.id not in wrappers)
            return flow_seconds, flow_seconds - busy

    return asyncio.run(read())


def measure(dataset: str, options, data_dir: Path, study_file: Path, scratch: Path, api_url: str) -> dict:
    """The three ways (and the cached rerun) on one data set's slice; prints and returns the figures."""
    figures: dict[str, dict] = {}
    results: dict[str, pd.DataFrame] = {}
    metric = "rmse" if dataset == "boston" else "f1"
    if not options.skip_plain:
        out = scratch / f"plain-{dataset}.json"
        figures["plain keras loop"] = run_measured(
            [sys.executable, __file__, "--data-dir", str(data_dir), "--seed", str(options.seed), "--datasets",
             dataset, "--plain-worker", str(out)], env=clean_env(), cwd=scratch, log=scratch / f"plain-{dataset}.log")
        if figures["plain keras loop"]["returncode"] != 0:
            sys.exit(f"plain loop failed:\n{(scratch / f'plain-{dataset}.log').read_text()[-3000:]}")
        results["plain keras loop"] = pd.DataFrame(json.loads(out.read_text()))
        print(f"{dataset}: plain keras loop {figures['plain keras loop']['wall_s']:.1f} s", flush=True)
    # "fused rerun": the same command again, answered by the up-to-date check without running the flow;
    # "fused rerun --force": the flow runs and takes every step from its caches;
    # "fused, seeds ...": the sample profile's seeds in one run, on its own empty state root.
    seeds = options.nnstudy_seeds or str(options.seed)
    engines = ([] if options.skip_keras_engine else ["keras"]) + ["fused", "fused rerun", "fused rerun --force"]
    profile_seeds = ",".join(str(s) for s in options.profile_seeds)
    if not options.nnstudy_seeds and profile_seeds != seeds:
        engines.append(f"fused, seeds {profile_seeds}")
    run_seeds: dict[str, int] = {}
    for name in engines:
        engine = name.split()[0].rstrip(",")
        name_seeds = name.split("seeds ")[1] if "seeds " in name else seeds
        run_seeds[f"nnstudy --engine {name}"] = len(name_seeds.split(","))
        home = scratch / f"home-{dataset}-{engine}" / name_seeds
        out_dir = scratch / f"out-{dataset}-{engine}" / name_seeds
        command = NNSTUDY + ["run", "--profile", "sample", "--study-file", str(study_file), "--datasets", dataset,
                             "--seeds", name_seeds, "--engine", engine, "--workers", "0",
                             "--data-dir", str(data_dir), "--out", str(out_dir)] + (
                                 ["--force"] if name.endswith("--force") else [])
        log = scratch / f"{dataset}-{name.replace(' ', '_')}.log"
        figure = run_measured(command, env=clean_env(NNSTUDY_HOME=str(home), PREFECT_API_URL=api_url),
                              cwd=scratch, log=log)
        if figure["returncode"] != 0:
            sys.exit(f"{name} failed:\n{log.read_text()[-3000:]}")
        if "nnstudy: up to date" in log.read_text():
            figures[f"nnstudy --engine {name} (up to date, no flow run)"] = figure
            print(f"{dataset}: nnstudy --engine {name} {figure['wall_s']:.1f} s (up to date)", flush=True)
            continue
        figure["flow_s"], figure["overhead_s"] = orchestration_overhead(api_url)
        # The training tasks' own time, as their log lines give it ("trained in 2.5s").
        figure["training_s"] = sum(float(t) for t in re.findall(r": trained in ([0-9.]+)s", log.read_text()))
        figures[f"nnstudy --engine {name}"] = figure
        if "seeds " in name:  # compared per seed below; its metrics are not the one-seed comparison's
            print(f"{dataset}: nnstudy --engine {name} {figure['wall_s']:.1f} s", flush=True)
            continue
        frame = pd.read_parquet(out_dir / "results.parquet")
        test = frame[frame["split"] == "test"].copy()
        test["metric"], test["value"] = metric, test[metric]
        results[f"nnstudy --engine {engine}"] = test
        print(f"{dataset}: nnstudy --engine {name} {figure['wall_s']:.1f} s", flush=True)

    seeds = len(seeds.split(","))
    cells = len(results["nnstudy --engine fused"]) // seeds
    print(f"\n{dataset} ({cells} cells; plain loop seed {options.seed}, nnstudy {seeds} seed(s) unless named)")
    print("| run | seeds | wall (s) | per seed (s) | training tasks (s) | peak RSS (MiB) | "
          "Prefect overhead (flow run time outside task runs) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, figure in figures.items():
        n = run_seeds.get(name, 1)
        overhead = (f"{figure['overhead_s']:.1f} s of {figure['flow_s']:.1f} s "
                    f"({100 * figure['overhead_s'] / figure['flow_s']:.0f} %)" if "flow_s" in figure else "–")
        training = f"{figure['training_s']:.1f}" if "training_s" in figure else "–"
        print(f"| {name} | {n} | {figure['wall_s']:.1f} | {figure['wall_s'] / n:.1f} | {training} | "
              f"{figure['peak_rss_mib']:.0f} | {overhead} |")
    fused = figures["nnstudy --engine fused"]["wall_s"]
    per_seed = {name: f["wall_s"] / run_seeds.get(name, 1) for name, f in figures.items()}
    fused_runs = [name for name in figures if name == "nnstudy --engine fused" or "seeds " in name]
    for name in ("plain keras loop", "nnstudy --engine keras"):
        for fused_name in fused_runs if name in figures else []:
            print(f"{name} / {fused_name}, per seed: {per_seed[name] / per_seed[fused_name]:.1f}x "
                  f"({per_seed[name]:.1f} s vs {per_seed[fused_name]:.1f} s per seed)")
    if "plain keras loop" in figures:
        for fused_name in fused_runs:
            training = figures[fused_name]["training_s"] / run_seeds[fused_name]
            print(f"plain keras loop / {fused_name}, training tasks only, per seed: "
                  f"{per_seed['plain keras loop'] / training:.1f}x ({training:.1f} s per seed)")
    for name, figure in figures.items():
        if "rerun" in name:
            print(f"{name.removeprefix('nnstudy --engine ')} / fused first run: {100 * figure['wall_s'] / fused:.1f} %")
    keys = ["experiment", "hidden_layers", "units", "activation", "epochs", "batch_size"]
    def one_seed(frame: pd.DataFrame) -> pd.DataFrame:  # the plain loop ran --seed only
        return frame[frame["seed"] == options.seed] if "seed" in frame else frame

    reference = one_seed(results["nnstudy --engine fused"]).set_index(keys)
    for name, frame in results.items():
        if name == "nnstudy --engine fused":
            continue
        frame = one_seed(frame)
        joined = frame.set_index(keys)[["value"]].merge(reference[["value"]], left_index=True, right_index=True,
                                                        suffixes=("", "_fused"))
        worst = (joined["value"] - joined["value_fused"]).abs()
        print(f"largest |{metric} difference| {name} vs fused (one seed, single runs): {worst.max():.4f} "
              f"(mean {worst.mean():.4f} over {len(joined)} cells)", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0, help="the plain loop's seed, and nnstudy's (default: 0)")
    parser.add_argument("--nnstudy-seeds", help="comma-separated seeds for the nnstudy runs instead of --seed; "
                                                 "times are then also given per seed")
    parser.add_argument("--skip-plain", action="store_true", help="leave out the plain Keras loop")
    parser.add_argument("--skip-keras-engine", action="store_true", help="leave out `nnstudy run --engine keras`")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--datasets", default="boston,mnist", help="comma-separated: boston, mnist")
    parser.add_argument("--plain-worker", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    data_dir = options.data_dir.resolve()

    study = yaml.safe_load((ROOT / "schemas" / "study.yaml").read_text())
    options.profile_seeds = study["profiles"]["sample"]["seeds"]
    boston_grid = study["experiments"]["boston"]["grid"]
    if options.plain_worker:  # the plain loop, in its own process so its memory is measured alone
        rows = plain_loop(data_dir, options.datasets, boston_grid, dict(MNIST_SLICE), options.seed)
        options.plain_worker.write_text(json.dumps(rows))
        return

    study["profiles"]["sample"]["grids"] = {"mnist": MNIST_SLICE}
    figures: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="nnstudy-vs-keras-") as scratch:
        scratch = Path(scratch)
        study_file = scratch / "study.yaml"
        study_file.write_text(yaml.safe_dump(study))
        print(f"{os.cpu_count()} CPUs; Boston grid {72} cells + MNIST slice {8} cells, seed {options.seed}",
              flush=True)
        with prefect_server(scratch / "prefect-server") as api_url:
            for dataset in options.datasets.split(","):
                figures[dataset] = measure(dataset, options, data_dir, study_file, scratch, api_url)
    if options.json:
        options.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
