"""Helpers for tests/test_browser.py: a throw-away JupyterLab server and its notebooks.

Everything lives under a pytest tmp folder: Jupyter config/data/runtime dirs, the
IPython dir, JupyterLab settings and workspaces, and a *copy* of the notebooks (with
outputs stripped), so the run never touches the user's home nor the repo's notebooks.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))  # the learning series, 01 to 06
DEFAULT_CHROMIUM = "/usr/bin/chromium"

# Flags that work for Debian's Chromium run as root in a container.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str:
    """Chromium executable: $TSPIKE_CHROMIUM if set, else Debian's /usr/bin/chromium."""
    return os.environ.get("TSPIKE_CHROMIUM") or DEFAULT_CHROMIUM


def browser_unavailable_reason() -> str | None:
    """Why tests/test_browser.py would skip here (no Chromium, no playwright module), or None."""
    path = chromium_path()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return (
            f"no Chromium executable at {path} (apt-get install chromium, or set TSPIKE_CHROMIUM to a Chromium binary)"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"the playwright module is not importable ({exc}); pip install -e '.[test]'"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- notebooks
def stripped(nb: dict) -> dict:
    """Copy of a notebook without outputs, execution counts or saved widget state, so
    whatever the browser shows afterwards was produced by this run."""
    nb = json.loads(json.dumps(nb))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    nb.get("metadata", {}).pop("widgets", None)
    nb.setdefault("metadata", {}).setdefault(
        "kernelspec", {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    )
    return nb


def prepare_root(tmp: Path, notebooks: list[Path]) -> tuple[Path, list[str]]:
    """Build the server's root_dir under tmp: a copy of notebooks/ (sibling files a notebook
    may read come along) with every notebook's outputs stripped.
    Returns (root_dir, paths of the notebooks relative to root_dir, '/'-separated)."""
    root = tmp / "lab_root"
    nb_dir = root / "notebooks"
    shutil.copytree(ROOT / "notebooks", nb_dir, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    rels = []
    for notebook in notebooks:
        target = nb_dir / notebook.name
        target.write_text(json.dumps(stripped(json.loads(notebook.read_text())), indent=1))
        rels.append(target.relative_to(root).as_posix())
    return root, rels


# --------------------------------------------------------------------------- server
def jupyter_env(tmp: Path) -> dict:
    """Environment keeping every Jupyter/IPython file under tmp (nothing in $HOME)."""
    dirs = {
        "JUPYTER_CONFIG_DIR": tmp / "jupyter_config",
        "JUPYTER_DATA_DIR": tmp / "jupyter_data",
        "JUPYTER_RUNTIME_DIR": tmp / "jupyter_runtime",
        "IPYTHONDIR": tmp / "ipython",
        "JUPYTERLAB_SETTINGS_DIR": tmp / "jupyter_config" / "lab" / "user-settings",
        "JUPYTERLAB_WORKSPACES_DIR": tmp / "jupyter_config" / "lab" / "workspaces",
    }
    env = dict(os.environ)
    for key, path in dirs.items():
        path.mkdir(parents=True, exist_ok=True)
        env[key] = str(path)
    env.pop("JUPYTER_PATH", None)  # only sys.prefix/share/jupyter (the venv) + tmp
    # Another venv activated in the calling shell must not lend its kernelspecs or executables.
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join(p for p in (os.path.dirname(sys.executable), env.get("PATH", "")) if p)
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    # Lab settings: render every cell (no windowing, so off-screen outputs are in the DOM
    # and laid out) and no news/update toasts over the notebook.
    settings = dirs["JUPYTERLAB_SETTINGS_DIR"]
    for rel, value in {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
    }.items():
        path = settings / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    return env


def python3_kernelspec_problem(env: dict) -> str | None:
    """None if the `python3` kernel the notebooks ask for runs this interpreter (the venv),
    else a sentence saying what is wrong."""
    out = subprocess.run(
        [sys.executable, "-m", "jupyter", "kernelspec", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        return f"`jupyter kernelspec list` failed: {out.stderr.strip()[-500:]}"
    specs = json.loads(out.stdout)["kernelspecs"]
    if "python3" not in specs:
        fix = f"{sys.executable} -m ipykernel install --sys-prefix --name python3"
        return f"no `python3` kernelspec (found {sorted(specs)}); run `{fix}`"
    argv0 = specs["python3"]["spec"]["argv"][0]
    # jupyter_client swaps a bare "python"/"python3" for the server's own sys.executable.
    bare = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}
    if argv0 in bare or Path(argv0).absolute() == Path(sys.executable).absolute() or argv0.startswith(sys.prefix):
        return None
    return (
        f"kernelspec python3 at {specs['python3']['resource_dir']} runs {argv0!r}, not this venv's "
        f"{sys.executable}; run `{sys.executable} -m ipykernel install --sys-prefix --name python3`"
    )


@dataclass
class LabServer:
    proc: subprocess.Popen
    port: int
    token: str
    root: Path
    runtime_dir: Path
    log_path: Path
    _log: object = field(repr=False, default=None)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}?token={self.token}"

    def api(self, path: str, method: str = "GET", timeout: float = 5.0):
        """Call the server's REST API (GET, POST or DELETE); returns the decoded JSON body or None."""
        req = urllib.request.Request(
            f"{self.base_url}/api/{path.lstrip('/')}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
            data=b"" if method == "POST" else None,
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
            return json.loads(body) if body else None

    def shutdown_kernels(self) -> int:
        """Shut down every session's kernel (the next notebook then has the CPU to itself)."""
        sessions = self.api("sessions") or []
        for session in sessions:
            self.api(f"sessions/{session['id']}", method="DELETE", timeout=30)
        return len(sessions)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "<no log>"

    def wait_ready(self, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                return self.api("status")
            except (urllib.error.URLError, ConnectionError, OSError, ValueError) as exc:
                last = exc
                time.sleep(0.25)
        raise TimeoutError(f"/api/status did not answer within {timeout:.0f}s ({last}):\n{self.log_tail()}")

    def stop(self) -> list[int]:
        """Shut the server down and make sure nothing it started survives: REST shutdown
        (stops kernels), SIGTERM then SIGKILL to the server's process group, then any
        kernel still holding a connection file in this server's runtime dir.
        Returns the pids that had to be killed after the server itself was gone."""
        if self.proc.poll() is None:
            try:
                self.api("shutdown", method="POST", timeout=10)
            except Exception:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)  # start_new_session: pgid == pid
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        killed = []
        for pid in pids_mentioning(str(self.runtime_dir)):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
        return killed


def pids_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains `text` (Linux /proc)."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next((ln for ln in (entry / "status").read_text().splitlines() if ln.startswith("State:")), "")
        except OSError:
            continue
        if text in cmdline and "zombie" not in state:
            found.append(int(entry.name))
    return found


def start_lab(tmp: Path, root: Path, env: dict) -> LabServer:
    port, token = free_port(), secrets.token_hex(16)
    log_path = tmp / "jupyterlab.log"
    log = open(log_path, "w")
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.open_browser=False",
        "--ServerApp.terminals_enabled=False",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run commands, read kernel state
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.news_url=None",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers run as root
    proc = subprocess.Popen(
        cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    return LabServer(
        proc=proc,
        port=port,
        token=token,
        root=root,
        runtime_dir=Path(env["JUPYTER_RUNTIME_DIR"]),
        log_path=log_path,
        _log=log,
    )


if __name__ == "__main__":
    # `python tests/browser_helpers.py`: exit 0 where the browser test runs the notebooks, else print why
    # and exit 1 (`make test` then runs them with nbval instead).
    reason = browser_unavailable_reason()
    if reason:
        print(reason)
    sys.exit(1 if reason else 0)
