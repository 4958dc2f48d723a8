#!/usr/bin/env python3
"""Screenshot the Prefect UI of a real run: start a local service on a free port (temporary PREFECT_HOME and
state root), run the quick deployment, and save PNGs taken by headless Chromium of its flow-run page (the task
runs and their artifacts on the timeline), its report artifact and its results table artifact.
Needs `chromium` (Debian: apt-get install chromium); reaches nothing beyond 127.0.0.1.

    python scripts/screenshot_ui.py [--out-dir docs] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nnstudy.service import LocalService, ServiceError, free_port  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--hide-scrollbars", "--no-first-run"]
# PNG name -> (what it shows: the flow run page, or the artifact page of that key; window size)
PAGES = {"prefect-ui-flow-run.png": ("flow-run", "1600,1500"),
         "prefect-ui-report.png": ("nnstudy-report-quick", "1600,1500"),
         "prefect-ui-results.png": ("nnstudy-results-quick", "1600,1000")}


def chromium_binary() -> str:
    """The Chromium executable, or an error saying how to install it."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    raise ServiceError("Chromium is not installed; on Debian: apt-get install -y chromium")


def screenshot(browser: str, url: str, path: Path, window: str, profile_dir: Path, wait_ms: int) -> None:
    """Save a PNG of the page once the single-page app had `wait_ms` of (virtual) time to render."""
    command = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", f"--window-size={window}",
               f"--virtual-time-budget={wait_ms}", f"--screenshot={path}", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    if done.returncode != 0 or not path.is_file():
        raise ServiceError(f"Chromium could not screenshot {url} (exit code {done.returncode}):\n{done.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs", help="where the PNGs go (default docs/)")
    parser.add_argument("--data-dir", help="data directory for the run (default: the deployment's)")
    parser.add_argument("--wait-ms", type=int, default=15000, help="time the UI gets to render (default 15000)")
    args = parser.parse_args(argv)
    browser = chromium_binary()
    with tempfile.TemporaryDirectory(prefix="nnstudy-ui-") as scratch:
        scratch = Path(scratch)
        local = LocalService(state_dir=scratch / "service", port=free_port())
        env = {"NNSTUDY_HOME": str(scratch / "home"), "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false"}
        try:
            with local.running(ROOT, env=env):
                params = {"out": str(scratch / "reports")} | ({"data_dir": args.data_dir} if args.data_dir else {})
                flow_run_id = local.run_deployment("quick", ROOT, params, env=env)
                print(f"flow run {local.ui_url}/runs/flow-run/{flow_run_id}: waiting for it to finish...")
                run = local.wait_for_flow_run(flow_run_id)
                print(f"flow run {run['name']}: {run['state']['name']}")
                args.out_dir.mkdir(parents=True, exist_ok=True)
                artifacts = {a["key"]: a["id"] for a in local.flow_run_artifacts(flow_run_id)}
                for name, (page, window) in PAGES.items():
                    url = (f"{local.ui_url}/runs/flow-run/{flow_run_id}" if page == "flow-run"
                           else f"{local.ui_url}/artifacts/artifact/{artifacts[page]}")
                    screenshot(browser, url, args.out_dir / name, window, scratch / "chromium", args.wait_ms)
                    print(f"saved {args.out_dir / name} ({url})")
        except ServiceError as exc:
            print(f"screenshot_ui: error: {exc}", file=sys.stderr)
            return 1
        if local.left_running:
            print(f"screenshot_ui: processes left running: {local.left_running}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
