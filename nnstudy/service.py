"""A local Prefect service for nnstudy: a server on 127.0.0.1, the process work pool, the deployments of
prefect.yaml and a worker, each started in its own process group and stopped by its PID.

Used by `scripts/service.py` (`make service-up` / `make service-down`), the end-to-end test and
`scripts/screenshot_ui.py`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnstudy.errors import NnstudyError

HOST = "127.0.0.1"
DEFAULT_PORT = 4200
POOL = "nnstudy-local"
FLOW = "nnstudy"
TRAIN_TAG = "nnstudy-train"  # the tag every training task run carries (tasks/prefect_ui.py)
TERMINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
QUIET_ENV = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "3",
             "TF_ENABLE_ONEDNN_OPTS": "0"}
# Starts the Prefect CLI with SIGINT at its default: a process launched from a non-interactive shell inherits
# SIGINT ignored, and a worker then cannot pass Ctrl-C/SIGINT on to its flow runs when it is stopped.
_LAUNCH = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
           "os.execv(sys.executable, [sys.executable, '-m', 'prefect', *sys.argv[1:]])")


class ServiceError(NnstudyError):
    """The local Prefect service could not be started, set up or stopped."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((HOST, port)) == 0


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of a living process (Linux; None for a zombie or no process), so a recorded
    PID is not confused with a reused one."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def group_alive(pgid: int) -> bool:
    """Whether any process of the process group is still alive."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process_group(pgid: int, process: subprocess.Popen | None = None, timeout: float = 30) -> bool:
    """SIGTERM the process group, SIGKILL it after `timeout` s; True when nothing of it is left."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if process is not None:
                process.poll()  # reap the leader, or it lingers as a zombie of this process
            if not group_alive(pgid):
                return True
            time.sleep(0.2)
    return not group_alive(pgid)


def processes_with_home(home: Path) -> list[int]:
    """PIDs of processes (Linux) whose environment has PREFECT_HOME=home: what a service left running."""
    marker = f"PREFECT_HOME={Path(home).resolve()}".encode() + b"\0"
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (entry / "environ").read_bytes() + b"\0" and int(entry.name) != os.getpid():
                found.append(int(entry.name))
        except OSError:
            continue
    return sorted(found)


def stop_leftovers(home: Path, timeout: float = 10) -> list[int]:
    """Stop processes still running with this PREFECT_HOME (a flow run its worker left behind); their PIDs."""
    leftovers = processes_with_home(home)
    for pid in leftovers:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and process_start_time(pid) is not None:
                time.sleep(0.2)
            if process_start_time(pid) is None:
                break
    return leftovers


@dataclass(frozen=True)
class LocalService:
    """Where one local service keeps its state, and how to reach it."""

    state_dir: Path
    port: int = DEFAULT_PORT
    prefect_home: Path | None = None
    # Filled when a `running` block ends: PIDs that outlived it (empty when everything stopped).
    left_running: list[int] = field(default_factory=list, compare=False, repr=False)

    @property
    def home(self) -> Path:
        """PREFECT_HOME of the server, the CLI and the worker: the server's SQLite database lives here."""
        return self.prefect_home or self.state_dir / "prefect"

    @property
    def ui_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"

    def environ(self, extra: dict[str, str] | None = None, cwd: Path | None = None) -> dict[str, str]:
        """This process's environment plus `extra`, pointed at this service's home and API."""
        env = {**os.environ, **QUIET_ENV, **(extra or {})}
        env.update(PREFECT_HOME=str(self.home), PREFECT_API_URL=self.api_url)
        if cwd is not None:
            env["PWD"] = str(Path(cwd).resolve())  # prefect.yaml's `{{ $PWD }}` is read from the environment
        return env

    def _spawn(self, args: list[str], log: Path, cwd: Path, env: dict[str, str] | None) -> subprocess.Popen:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            return subprocess.Popen([sys.executable, "-c", _LAUNCH, *args], cwd=cwd, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=self.environ(env, cwd), start_new_session=True)

    def start_server(self, env: dict[str, str] | None = None) -> subprocess.Popen:
        """`prefect server start` bound to 127.0.0.1, in its own process group; its log is server.log."""
        if port_in_use(self.port):
            raise ServiceError(f"Port {self.port} on {HOST} is already in use (another Prefect server?). Stop "
                               "what listens there, or choose another port with --port.")
        self.home.mkdir(parents=True, exist_ok=True)
        return self._spawn(["server", "start", "--host", HOST, "--port", str(self.port), "--analytics-off"],
                           self.state_dir / "server.log", self.state_dir, env)

    def wait_until_healthy(self, server: subprocess.Popen, timeout: float = 180) -> float:
        """Poll /api/health until it answers true; returns the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if server.poll() is not None:
                raise ServiceError(f"The Prefect server exited with code {server.returncode} before it answered "
                                   f"on {self.api_url}/health. Its log ({self.state_dir / 'server.log'}) ends:\n"
                                   f"{_tail(self.state_dir / 'server.log')}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=5) as response:
                    if json.load(response) is True:
                        return time.monotonic() - started
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.5)
        raise ServiceError(f"The Prefect server did not answer on {self.api_url}/health within {timeout:.0f} s. "
                           f"Its log ({self.state_dir / 'server.log'}) ends:\n{_tail(self.state_dir / 'server.log')}")

    def prefect(self, *args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None) -> str:
        """Run one Prefect CLI command against this service; its output, or ServiceError naming the command."""
        command = ["prefect", *args]
        done = subprocess.run([sys.executable, "-m", *command], cwd=cwd, env=self.environ(env, cwd), text=True,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout)
        if done.returncode != 0:
            raise ServiceError(f"`{' '.join(command)}` (in {cwd}) failed with exit code {done.returncode}:\n"
                               f"{done.stdout.strip()[-3000:]}")
        return done.stdout

    def set_up(self, project_dir: Path, train_limit: int = 1, env: dict[str, str] | None = None) -> None:
        """Create the process work pool and the training concurrency limit, and deploy prefect.yaml."""
        self.prefect("work-pool", "create", POOL, "--type", "process", "--overwrite", cwd=project_dir, env=env)
        self.prefect("concurrency-limit", "create", TRAIN_TAG, str(train_limit), cwd=project_dir, env=env)
        self.prefect("deploy", "--all", "--no-prompt", cwd=project_dir, env=env)

    def start_worker(self, project_dir: Path, name: str = "nnstudy-worker",
                     env: dict[str, str] | None = None) -> subprocess.Popen:
        """A process worker on the pool, in its own process group; its log is worker.log."""
        return self._spawn(["worker", "start", "--pool", POOL, "--name", name], self.state_dir / "worker.log",
                           project_dir, env)

    def api(self, method: str, path: str, payload: Any = None, timeout: float = 30) -> Any:
        """One call to the server's REST API; the decoded JSON answer."""
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(f"{self.api_url}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)

    def run_deployment(self, deployment: str, project_dir: Path, params: dict[str, Any] | None = None,
                       env: dict[str, str] | None = None) -> str:
        """`prefect deployment run FLOW/DEPLOYMENT --param k=v ...`; returns the new flow run's id."""
        args = ["deployment", "run", f"{FLOW}/{deployment}"]
        for key, value in (params or {}).items():
            args += ["--param", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
        output = self.prefect(*args, cwd=project_dir, env=env)
        match = re.search(r"UUID: ([0-9a-f-]{36})", output)
        if not match:
            raise ServiceError(f"`prefect {' '.join(args)}` printed no flow run id:\n{output}")
        return match.group(1)

    def wait_for_flow_run(self, flow_run_id: str, timeout: float = 600) -> dict:
        """Poll the flow run until it reaches a final state; returns it as the API gives it."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.api("GET", f"/flow_runs/{flow_run_id}")
            if run["state"] and run["state"]["type"] in TERMINAL_STATES:
                return run
            if time.monotonic() > deadline:
                raise ServiceError(f"Flow run {flow_run_id} is still {run['state']['name']} after {timeout:.0f} s; "
                                   f"see {self.state_dir / 'worker.log'}.")
            time.sleep(2)

    @contextmanager
    def running(self, project_dir: Path, *, worker_name: str = "nnstudy-worker",
                env: dict[str, str] | None = None) -> Iterator[LocalService]:
        """Server, pool, deployments and a worker for the length of a `with` block, all stopped after it.

        On the way out each process group is stopped (SIGTERM, then SIGKILL), then any process still
        running with this PREFECT_HOME (a flow run in a group of its own); their PIDs are left in
        `self.left_running`, empty when everything stopped.
        """
        started: list[subprocess.Popen] = []
        self.left_running.clear()
        try:
            started.append(self.start_server(env=env))
            self.wait_until_healthy(started[0])
            self.set_up(project_dir, env=env)
            started.append(self.start_worker(project_dir, name=worker_name, env=env))
            yield self
        finally:
            self.left_running.extend(p.pid for p in reversed(started) if not stop_process_group(p.pid, p))
            self.left_running.extend(stop_leftovers(self.home))
            self.left_running.extend(p.pid for p in started if group_alive(p.pid) and p.pid not in self.left_running)

    def flow_run_artifacts(self, flow_run_id: str) -> list[dict]:
        """The artifacts attached to a flow run (its tasks' included), latest version of each."""
        return self.api("POST", "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})

    def flow_run_task_runs(self, flow_run_id: str) -> list[dict]:
        """The task runs of a flow run and of its subflow runs (the trials subflow)."""
        children = self.api("POST", "/flow_runs/filter",
                            {"flow_runs": {"parent_flow_run_id": {"any_": [flow_run_id]}}, "limit": 200})
        ids = [flow_run_id] + [child["id"] for child in children]
        return self.api("POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": ids}}, "limit": 200})


# ------------------------------------------------------------------ the `make service-up/down` helpers

STATE_FILE = "service.json"


def _running(record: dict) -> bool:
    """Whether the recorded process group is alive and its leader (if still there) is the recorded process."""
    pgid = record["pid"]
    if not group_alive(pgid):
        return False
    # While any member of a group lives, its id is not handed out again; a living leader must match the record.
    now = process_start_time(pgid)
    return now is None or record.get("start_time") in (None, now)


def up(state_dir: Path, project_dir: Path, port: int = DEFAULT_PORT, train_limit: int = 1) -> LocalService:
    """Start server and worker, create pool and limit, deploy; record their PIDs in state_dir/service.json."""
    state_dir = state_dir.resolve()
    state_file = state_dir / STATE_FILE
    if state_file.exists():
        recorded = json.loads(state_file.read_text())
        if any(_running(p) for p in recorded.get("processes", {}).values()):
            raise ServiceError(f"A local service recorded in {state_file} is still running at "
                               f"{recorded.get('ui_url')}; stop it first with `make service-down`.")
    service = LocalService(state_dir=state_dir, port=port)
    started: dict[str, subprocess.Popen] = {}

    def record() -> None:
        processes = {name: {"pid": p.pid, "start_time": process_start_time(p.pid)} for name, p in started.items()}
        state_dir.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps({"ui_url": service.ui_url, "api_url": service.api_url,
                                          "prefect_home": str(service.home), "processes": processes}, indent=2))

    try:
        started["server"] = service.start_server()
        record()
        service.wait_until_healthy(started["server"])
        service.set_up(project_dir, train_limit=train_limit)
        started["worker"] = service.start_worker(project_dir)
        record()
    except BaseException:
        for name in ("worker", "server"):
            if name in started:
                stop_process_group(started[name].pid, started[name])
        state_file.unlink(missing_ok=True)
        raise
    (state_dir / "env").write_text(f"export PREFECT_HOME={service.home}\nexport PREFECT_API_URL={service.api_url}\n")
    return service


def down(state_dir: Path) -> list[str]:
    """Stop the worker, then the server, recorded in state_dir/service.json; one line per process."""
    state_file = state_dir.resolve() / STATE_FILE
    if not state_file.exists():
        return [f"No local service is recorded in {state_file}; nothing to stop."]
    recorded = json.loads(state_file.read_text())
    processes = recorded.get("processes", {})
    lines = []
    for name in ("worker", "server"):
        if name not in processes:
            continue
        entry = processes[name]
        if not _running(entry):
            lines.append(f"{name} (PID {entry['pid']}) was not running")
        elif stop_process_group(entry["pid"]):
            lines.append(f"{name} (PID {entry['pid']}) stopped")
        else:
            raise ServiceError(f"The {name} (process group {entry['pid']}) survived SIGTERM and SIGKILL; "
                               f"{state_file} is kept so you can retry.")
    # A flow run has a process group of its own; its worker stops it, unless the worker had to be killed.
    if recorded.get("prefect_home"):
        lines += [f"flow run process (PID {pid}) stopped" for pid in stop_leftovers(Path(recorded["prefect_home"]))]
    state_file.unlink()
    return lines
