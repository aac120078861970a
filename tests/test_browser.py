"""Notebook 01 really renders in a browser: ipywidgets and plotly in JupyterLab + Chromium.

A throw-away JupyterLab (tmp config/runtime/data dirs, tmp copy of notebooks/ with outputs
stripped, random token, free port) is driven by headless Chromium through Playwright:
Run All Cells, wait for the kernel, then check the DOM for a rendered ipywidgets slider
and a plotly figure (svg.main-svg), no error output, that moving a slider redraws a
plot, and save screenshots.

Skips, saying why, where Chromium (/usr/bin/chromium, or $TSPIKE_CHROMIUM) or the
playwright module is missing. Target notebook: $TSPIKE_BROWSER_NOTEBOOK if set, else
notebooks/01_information_loss.ipynb, else (while 01 is not written yet and not tracked
by git) a generated stand-in with an IntSlider driving a plotly figure.
Screenshots go to <tmp_path>/screenshots and, if set, $TSPIKE_SCREENSHOT_DIR.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from browser_helpers import (
    CHROMIUM_ARGS,
    NOTEBOOK_01,
    ROOT,
    chromium_path,
    jupyter_env,
    prepare_root,
    python3_kernelspec_problem,
    start_lab,
)

pytestmark = pytest.mark.browser

RUN_TIMEOUT_MS = 120_000  # torch import + every cell of notebook 01
LOAD_TIMEOUT_MS = 60_000


# --------------------------------------------------------------------------- fixtures
@pytest.fixture
def chromium() -> str:
    path = chromium_path()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.skip(f"no Chromium executable at {path} (apt-get install chromium, "
                    f"or set TSPIKE_CHROMIUM to a Chromium binary)")
    return path


@pytest.fixture
def sync_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"the playwright module is not importable ({exc}); pip install -e '.[test]'")
    return sync_playwright


def _tracked_by_git(path: Path) -> bool:
    try:
        out = subprocess.run(["git", "ls-files", "--error-unmatch", str(path.relative_to(ROOT))],
                             cwd=ROOT, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0


@pytest.fixture
def target_notebook() -> Path | None:
    """The repo notebook to drive, or None for the generated stand-in."""
    override = os.environ.get("TSPIKE_BROWSER_NOTEBOOK")
    if override:
        path = Path(override).resolve()
        if not path.is_file():
            pytest.fail(f"TSPIKE_BROWSER_NOTEBOOK={override} is not a file")
        return path
    if NOTEBOOK_01.is_file():
        return NOTEBOOK_01
    if _tracked_by_git(NOTEBOOK_01):
        pytest.fail(f"{NOTEBOOK_01.relative_to(ROOT)} is tracked by git but missing from the working tree")
    warnings.warn(f"{NOTEBOOK_01.relative_to(ROOT)} does not exist yet: the browser test drives a "
                  f"generated stand-in notebook (IntSlider + plotly figure) instead")
    return None


@pytest.fixture
def lab(tmp_path, chromium, sync_playwright, target_notebook):
    """A JupyterLab server on 127.0.0.1 serving a tmp copy of the notebook; always stopped,
    kernels included. Yields (server, notebook path relative to the server root)."""
    env = jupyter_env(tmp_path)
    problem = python3_kernelspec_problem(env)
    if problem:
        pytest.fail(problem)
    root, rel = prepare_root(tmp_path, target_notebook)
    server = start_lab(tmp_path, root, env)
    try:
        server.wait_ready()
        yield server, rel
    finally:
        leftovers = server.stop()
        if leftovers:
            warnings.warn(f"killed processes left behind by the JupyterLab server: {leftovers}")


# --------------------------------------------------------------------------- browser JS
WAIT_NOTEBOOK_JS = """() => {
  const app = window.jupyterapp;
  const w = app && app.shell && app.shell.currentWidget;
  return !!(w && w.content && w.content.model && w.sessionContext);
}"""

RUN_ALL_JS = """async (timeoutMs) => {
  const app = window.jupyterapp;
  const panel = app.shell.currentWidget;
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const deadline = Date.now() + timeoutMs;
  const timeout = new Promise((_, rej) => setTimeout(() => rej(new Error('timed out')), timeoutMs));
  await Promise.race([panel.context.ready.then(() => panel.sessionContext.ready), timeout]);
  const ok = await Promise.race([app.commands.execute('notebook:run-all-cells'), timeout]);
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  let prefix = null;  // which Python the kernel runs (asked directly, not via a notebook cell)
  if (kernel) {
    prefix = '';
    const fut = kernel.requestExecute({code: 'import sys; print(sys.prefix, end="")', store_history: false});
    fut.onIOPub = msg => { if (msg.header.msg_type === 'stream') prefix += msg.content.text; };
    await Promise.race([fut.done, timeout]);
  }
  while (kernel && kernel.status !== 'idle' && Date.now() < deadline) await sleep(100);
  const cells = [];
  const model = panel.content.model;
  for (let i = 0; i < model.cells.length; i++) {
    const c = model.cells.get(i);
    if (c.type !== 'code') continue;
    const outputs = [];
    for (let j = 0; j < c.outputs.length; j++) outputs.push(c.outputs.get(j).toJSON());
    cells.push({index: i, execution_count: c.executionCount, outputs});
  }
  return {ok, kernel_name: kernel ? kernel.name : null, kernel_status: kernel ? kernel.status : null,
          kernel_prefix: prefix, path: panel.context.path, cells};
}"""

# Counts of rendered (laid out) widgets, sliders and plotly figures in the output areas.
RENDERED_JS = """() => ({
  widgets: document.querySelectorAll('.jp-OutputArea-output > .jupyter-widgets').length,
  sliders: Array.from(document.querySelectorAll('.jp-OutputArea-output .widget-slider'))
    .filter(s => s.querySelector('.noUi-handle, input') && s.offsetWidth > 0).length,
  plots: Array.from(document.querySelectorAll('.jp-OutputArea-output.js-plotly-plot, .jp-OutputArea-output .js-plotly-plot'))
    .filter(p => p.querySelector('svg.main-svg') && p.offsetWidth > 0).length,
})"""

# What the plots currently draw: trace paths, markers and tick labels of every plotly figure.
PLOT_SIGNATURE_JS = """() => Array.from(document.querySelectorAll('.jp-OutputArea-output .js-plotly-plot'))
  .map(p => Array.from(p.querySelectorAll('.scatterlayer path, .barlayer path, .heatmaplayer image, .xtick text, .ytick text'))
    .map(e => e.getAttribute('d') || e.getAttribute('href') || e.textContent).join('|')).join('#')"""

ERROR_OUTPUTS_JS = """() => {
  const found = [];
  for (const el of document.querySelectorAll('.jp-OutputArea-output')) {
    const mime = el.getAttribute('data-mime-type') || '';
    const text = el.innerText || '';
    if (mime === 'application/vnd.jupyter.error'
        || (mime === 'application/vnd.jupyter.stderr' && /Traceback|\\w+(Error|Exception):/.test(text))
        || /Error displaying widget|model not found/.test(text))
      found.push(mime + ': ' + text.slice(0, 800));
  }
  return found;
}"""


def _assert_no_error_outputs(page) -> None:
    shown = page.evaluate(ERROR_OUTPUTS_JS)
    assert not shown, "error output shown in the notebook:\n" + "\n---\n".join(shown)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _publish(shots: list[Path]) -> list[Path]:
    """The screenshots that exist, plus their copies in $TSPIKE_SCREENSHOT_DIR if set."""
    saved = [p for p in shots if p.exists()]
    extra = os.environ.get("TSPIKE_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        saved += [Path(shutil.copy2(p, Path(extra) / p.name)) for p in list(saved)]
    return saved


# --------------------------------------------------------------------------- the test
def test_notebook_renders_widgets_and_plotly_in_chromium(lab, chromium, sync_playwright, target_notebook,
                                                         tmp_path, record_property):
    server, rel = lab
    name = Path(rel).stem
    before = _sha256(target_notebook) if target_notebook else None
    shots = tmp_path / "screenshots"
    shots.mkdir()
    page_errors: list[str] = []

    with sync_playwright() as p:
        home = tmp_path / "browser_home"  # Chromium's ~/.config, ~/.cache, crash reports
        browser_env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
                       "XDG_CACHE_HOME": str(home / ".cache")}
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
                                    chromium_sandbox=False, timeout=LOAD_TIMEOUT_MS, env=browser_env)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            try:
                page.goto(server.url(f"lab/tree/{rel}"), wait_until="domcontentloaded", timeout=LOAD_TIMEOUT_MS)
                page.wait_for_function(WAIT_NOTEBOOK_JS, timeout=LOAD_TIMEOUT_MS)
                page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=LOAD_TIMEOUT_MS)
                page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
                # A kernel-selection dialog appears only if the notebook names no kernel.
                dialog = page.locator(".jp-Dialog .jp-mod-accept")
                if dialog.count():
                    dialog.first.click()

                result = page.evaluate(RUN_ALL_JS, RUN_TIMEOUT_MS)
                assert result["path"] == rel
                assert result["kernel_name"] == "python3", result["kernel_name"]
                assert result["kernel_status"] == "idle", f"kernel still {result['kernel_status']}"
                assert Path(result["kernel_prefix"]).resolve() == Path(sys.prefix).resolve(), (
                    f"kernel runs the Python at {result['kernel_prefix']}, not this venv ({sys.prefix})")
                errors = [(c["index"], o.get("ename"), o.get("evalue")) for c in result["cells"]
                          for o in c["outputs"] if o.get("output_type") == "error"]
                assert not errors, f"cells raised: {errors}"
                not_run = [c["index"] for c in result["cells"] if c["execution_count"] is None]
                assert result["ok"] and not not_run, f"run-all ok={result['ok']}, cells not executed: {not_run}"

                # Rendered in the DOM, not just present in the kernel's replies: every widget
                # and plotly output of the notebook (more in the DOM: Output widgets nest them).
                mimes = [m for c in result["cells"] for o in c["outputs"] for m in o.get("data", {})]
                want_widgets = mimes.count("application/vnd.jupyter.widget-view+json")
                want_plots = mimes.count("application/vnd.plotly.v1+json")
                page.wait_for_function(f"() => {{ const r = ({RENDERED_JS})(); return r.widgets >= "
                                       f"{max(want_widgets, 1)} && r.plots >= {max(want_plots, 1)} && r.sliders >= 1; }}",
                                       timeout=30_000)
                slider = page.locator(".jp-OutputArea-output .widget-slider").first
                rendered = page.evaluate(RENDERED_JS)
                n_sliders, n_plots = rendered["sliders"], rendered["plots"]
                assert page.locator(".jp-OutputArea-output .jupyter-widgets").count() >= 1
                assert page.locator(".jp-OutputArea-output .js-plotly-plot .scatterlayer, "
                                    ".jp-OutputArea-output .js-plotly-plot .barlayer, "
                                    ".jp-OutputArea-output .js-plotly-plot .heatmaplayer").count() >= 1
                _assert_no_error_outputs(page)

                # Moving a slider redraws a plot (kernel round trip through the widget).
                handles = page.locator(".jp-OutputArea-output .widget-slider .noUi-handle")
                drew = page.evaluate(PLOT_SIGNATURE_JS)
                changed = False
                for i in range(min(handles.count(), 3)):
                    handle = handles.nth(i)
                    handle.scroll_into_view_if_needed()
                    handle.focus()
                    page.keyboard.press("ArrowRight")
                    try:
                        page.wait_for_function(f"() => ({PLOT_SIGNATURE_JS})() !== {json.dumps(drew)}"
                                               f" && document.querySelectorAll('.jp-OutputArea-output .js-plotly-plot svg.main-svg').length > 0",
                                               timeout=15_000)
                        changed = True
                        break
                    except Exception:
                        continue
                if target_notebook is None:
                    assert changed, "moving the IntSlider did not redraw the plotly figure"
                elif not changed:
                    warnings.warn(f"{name}: moving a slider redrew no plotly figure")
                _assert_no_error_outputs(page)

                slider.scroll_into_view_if_needed()
                page.wait_for_timeout(500)
                page.screenshot(path=str(shots / f"{name}.png"))
                # Whole notebook in one picture: grow the viewport to the notebook's height.
                height = page.evaluate("() => Math.max(...Array.from(document.querySelectorAll("
                                       "'.jp-NotebookPanel-notebook, .jp-WindowedPanel-inner')).map(e => e.scrollHeight))")
                page.set_viewport_size({"width": 1400, "height": int(min(max(height + 250, 1000), 12000))})
                page.wait_for_timeout(1000)
                page.screenshot(path=str(shots / f"{name}_full.png"))
            except Exception:
                page.screenshot(path=str(shots / f"{name}_failure.png"))
                raise
            finally:
                saved = _publish([shots / f"{name}{suffix}.png" for suffix in ("", "_full", "_failure")])
                record_property("screenshots", ", ".join(map(str, saved)))
                print("screenshots:", *saved, sep="\n  ")
        finally:
            browser.close()

    print(f"{rel}: {n_sliders} slider(s), {n_plots} plotly figure(s), slider redraw: {changed}; "
          f"page errors: {page_errors}")
    if target_notebook is not None:
        assert _sha256(target_notebook) == before, f"{target_notebook} was modified on disk by the run"
