#!/usr/bin/env python3
"""Bring the local nnstudy Prefect service up or down: `python scripts/service.py up|down|status`.

up:   `prefect server start` on 127.0.0.1 (PREFECT_HOME=data/service/prefect), the `nnstudy-local` process work
      pool, the `nnstudy-train` concurrency limit, `prefect deploy --all`, and a process worker; PIDs and logs
      go to data/service/ (NNSTUDY_HOME/service when NNSTUDY_HOME is set).
down: stops the worker and the server recorded there, by their process groups.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nnstudy import service  # noqa: E402
from nnstudy.settings import RunSettings  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--port", type=int, default=service.DEFAULT_PORT, help="server port on 127.0.0.1 (default 4200)")
    parser.add_argument("--train-limit", type=int, default=1,
                        help="trainings that may run at once on this server (default 1)")
    args = parser.parse_args(argv)
    state_dir = RunSettings.resolve(profile="quick", cwd=ROOT).home / "service"
    try:
        if args.action == "down":
            print("\n".join(service.down(state_dir)))
        elif args.action == "status":
            state_file = state_dir / service.STATE_FILE
            print(state_file.read_text() if state_file.exists() else f"No local service recorded in {state_file}.")
        else:
            local = service.up(state_dir, ROOT, port=args.port, train_limit=args.train_limit)
            print(f"Prefect UI:  {local.ui_url}\n"
                  f"Deployments: {', '.join(f'{service.FLOW}/{d}' for d in ('quick', 'sample', 'full'))} "
                  f"on work pool {service.POOL}\n"
                  f"Logs:        {state_dir}/server.log, {state_dir}/worker.log\n"
                  f"Run one:     source {state_dir}/env && prefect deployment run '{service.FLOW}/quick' --watch\n"
                  f"Stop:        make service-down")
    except service.ServiceError as exc:
        print(f"service: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
