"""Does memory stay flat when one process trains group after group? Resident memory after each one.

    python benchmarks/memory.py --data-dir ../shared/datasets                 # fused, Boston + MNIST, 3 rounds
    python benchmarks/memory.py --data-dir ../shared/datasets --engine keras --experiments boston --rounds 2

Trains the sample profile's training tasks for the chosen experiments (fusion groups with the fused
engine, single trials with the Keras engine) over and over in this one process, each round with new
seeds, calling the same function a training task calls. Prints the resident set size (RSS) after every
task, the peak RSS of the process, and how much the RSS at the end of each round grew over the first
round's: a leak shows as growth that keeps climbing with the number of tasks. Figures are recorded in
README.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIB = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--engine", choices=("fused", "keras"), default="fused")
    parser.add_argument("--experiments", default="boston,mnist",
                        help="comma-separated experiments of the study (boston, mnist, adult-hours, adult-income)")
    parser.add_argument("--rounds", type=int, default=3, help="times the tasks are trained, each with new seeds")
    options = parser.parse_args()

    from nnstudy.runtime import quiet_libraries

    quiet_libraries()
    import psutil

    from schemas.study import load_study
    from tasks import fused, train
    from tasks.preprocess import prepare_local
    from tasks.steps import training_units

    process = psutil.Process()
    study = load_study()
    experiments = [name.strip() for name in options.experiments.split(",") if name.strip()]
    data = {name: prepare_local(name, options.data_dir.resolve(),
                                max_train_rows=study.profile("sample").max_train_rows,
                                max_test_rows=study.profile("sample").max_test_rows) for name in experiments}
    print(f"engine {options.engine}, experiments {', '.join(experiments)}, {options.rounds} rounds, "
          f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print(f"command: python benchmarks/memory.py {' '.join(sys.argv[1:])}")
    print(f"RSS before training: {process.memory_info().rss / MIB:,.0f} MiB", flush=True)

    round_end, count = [], 0
    for round_ in range(options.rounds):
        seeds = [1000 * (round_ + 1)]
        for experiment in experiments:
            arrays, kwargs = data[experiment]
            trials = [t for t in study.trials("sample", seeds=seeds) if t.experiment == experiment]
            for unit in training_units(trials, options.engine):
                started = time.perf_counter()
                if options.engine == "fused":
                    fused.train_group(arrays, unit, **kwargs)
                    label = fused.group_label(unit)
                else:
                    train.fit_and_evaluate(arrays, unit[0], **kwargs)
                    label = unit[0].label
                count += 1
                if options.engine == "fused" or count % 12 == 0:
                    print(f"  round {round_ + 1}, task {count:3d}: RSS {process.memory_info().rss / MIB:7,.0f} MiB "
                          f"after {label} ({time.perf_counter() - started:.1f} s)", flush=True)
        round_end.append(process.memory_info().rss / MIB)
        peak_so_far = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"round {round_ + 1} done: {count} tasks, RSS {round_end[-1]:,.0f} MiB, "
              f"peak RSS so far {peak_so_far:,.0f} MiB", flush=True)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per_round = count // options.rounds
    print(f"\npeak RSS {peak:,.0f} MiB over {count} training tasks")
    for index, rss in enumerate(round_end[1:], start=2):
        print(f"RSS at the end of round {index} - round 1: {rss - round_end[0]:+,.0f} MiB "
              f"({(index - 1) * per_round} tasks later)")
    if len(round_end) > 1:
        growth = (round_end[-1] - round_end[0]) / ((len(round_end) - 1) * per_round)
        print(f"growth per training task after the first round: {growth:+.2f} MiB")
    if len(round_end) > 2:
        # The first round builds what later rounds reuse (kept models, allocator pools): the trend after it,
        # a least-squares line through the ends of rounds 2..N, is what a leak would show as.
        slope = float(np.polyfit(np.arange(len(round_end) - 1), round_end[1:], 1)[0]) / per_round
        print(f"trend of the round-end RSS over rounds 2-{len(round_end)}: {slope:+.2f} MiB per training task")


if __name__ == "__main__":
    main()
