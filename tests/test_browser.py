"""Every learning notebook really runs in a browser: ipywidgets and plotly in JupyterLab + Chromium.

One throw-away JupyterLab (tmp config/runtime/data dirs, tmp copy of notebooks/ with outputs
stripped, random token, free port) serves the whole series; headless Chromium, driven by
Playwright, opens each notebook in a workspace of its own: Run All Cells, wait for the kernel,
then check the DOM for rendered widgets and plotly figures (svg.main-svg) and no error output,
move the first control of the first panel (a widget box holding a control and a plotly figure:
a slider is stepped, a dropdown takes its next option) and check that the panel's figure was
redrawn. The kernel is shut down before the next notebook.

Skips, saying why, where Chromium (/usr/bin/chromium, or $TSPIKE_CHROMIUM) or the playwright
module is missing. Screenshots go to <tmp>/screenshots: the moved panel, a failing page, and,
where $TSPIKE_SCREENSHOT_DIR is set, the whole notebook (all copied there).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import pytest
from browser_helpers import (
    CHROMIUM_ARGS,
    NOTEBOOKS,
    browser_unavailable_reason,
    chromium_path,
    jupyter_env,
    prepare_root,
    python3_kernelspec_problem,
    start_lab,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RUN_TIMEOUT_MS = 300_000  # torch import + every cell; 03 trains nine small networks
LOAD_TIMEOUT_MS = 60_000
REDRAW_TIMEOUT_MS = 60_000  # a kernel round trip through the widget, on a busy machine


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def chromium() -> str:
    reason = browser_unavailable_reason()
    if reason:
        pytest.skip(reason)
    return chromium_path()


@pytest.fixture(scope="module")
def sync_playwright(chromium):
    from playwright.sync_api import sync_playwright

    return sync_playwright


@pytest.fixture(scope="module")
def lab(tmp_path_factory, chromium, sync_playwright):
    """A JupyterLab server on 127.0.0.1 serving a tmp copy of the notebooks; always stopped,
    kernels included. Yields (server, {notebook stem: path relative to the server root})."""
    tmp = tmp_path_factory.mktemp("lab")
    env = jupyter_env(tmp)
    problem = python3_kernelspec_problem(env)
    if problem:
        pytest.fail(problem)
    root, rels = prepare_root(tmp, NOTEBOOKS)
    server = start_lab(tmp, root, env)
    try:
        server.wait_ready()
        yield server, {Path(rel).stem: rel for rel in rels}
    finally:
        leftovers = server.stop()
        if leftovers:
            warnings.warn(f"killed processes left behind by the JupyterLab server: {leftovers}", stacklevel=2)


@pytest.fixture(scope="module")
def browser(tmp_path_factory, chromium, sync_playwright):
    home = tmp_path_factory.mktemp("browser_home")  # Chromium's ~/.config, ~/.cache, crash reports
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
    }
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            chromium_sandbox=False,
            timeout=LOAD_TIMEOUT_MS,
            env=env,
        )
        # one context for the whole series: JupyterLab's static files load once and are cached for the
        # next notebook (each still opens in a page and a workspace of its own)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        try:
            yield context
        finally:
            context.close()
            browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


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

# Counts of rendered (laid out) widgets and plotly figures in the output areas.
RENDERED_JS = """() => ({
  widgets: document.querySelectorAll('.jp-OutputArea-output > .jupyter-widgets').length,
  plots: Array.from(document.querySelectorAll(
      '.jp-OutputArea-output.js-plotly-plot, .jp-OutputArea-output .js-plotly-plot'))
    .filter(p => p.querySelector('svg.main-svg') && p.offsetWidth > 0).length,
})"""

# The panels: widget boxes holding a control (slider handle or dropdown) and a drawn plotly figure,
# outermost only, in document order. Each gets data-tspike-panel=<index> for the locators below.
MARK_PANELS_JS = """() => {
  const controls = '.widget-slider .noUi-handle, .widget-dropdown select';
  const boxes = Array.from(document.querySelectorAll('.jp-OutputArea-output .widget-vbox'))
    .filter(b => b.querySelector(controls) && b.querySelector('.js-plotly-plot svg.main-svg'))
    .filter((b, _, all) => !all.some(o => o !== b && o.contains(b)));
  boxes.forEach((b, i) => b.setAttribute('data-tspike-panel', String(i)));
  return boxes.map(b => {
    const c = b.querySelector(controls);
    const label = c.closest('.widget-inline-hbox, .widget-slider, .widget-dropdown');
    const text = label && label.querySelector('.widget-label');
    return {kind: c.tagName === 'SELECT' ? 'dropdown' : 'slider', label: text ? text.textContent : ''};
  });
}"""

# What a panel's figure currently draws: trace paths, images and tick labels.
SIGNATURE_JS = """(i) => {
  const box = document.querySelector(`[data-tspike-panel="${i}"]`);
  if (!box) return null;
  return Array.from(box.querySelectorAll('.js-plotly-plot'))
    .map(p => Array.from(p.querySelectorAll('.scatterlayer path, .barlayer path, .boxlayer path, '
                                           + '.heatmaplayer image, .xtick text, .ytick text, .gtitle'))
      .map(e => e.getAttribute('d') || e.getAttribute('href') || e.textContent).join('|')).join('#');
}"""

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


def _move(page, panel: int, kind: str) -> str:
    """Change the panel's first control once: a slider one step (back if it sits at its maximum),
    a dropdown to its next option. Returns what was done."""
    box = page.locator(f'[data-tspike-panel="{panel}"]')
    if kind == "dropdown":
        select = box.locator(".widget-dropdown select").first
        options = select.locator("option").all_text_contents()
        current = select.input_value()
        values = select.evaluate("s => Array.from(s.options).map(o => o.value)")
        target = next(v for v in values if v != current)
        select.scroll_into_view_if_needed()
        select.select_option(target)
        return f"dropdown {current!r} -> {options[values.index(target)]!r}"
    handle = box.locator(".widget-slider .noUi-handle").first
    handle.scroll_into_view_if_needed()
    now, top = (float(handle.get_attribute(a) or "nan") for a in ("aria-valuenow", "aria-valuemax"))
    down = now >= top  # False where noUiSlider gives no value: step up
    handle.focus()
    page.keyboard.press("ArrowLeft" if down else "ArrowRight")
    return f"slider from {now:g} {'down' if down else 'up'} one step"


# --------------------------------------------------------------------------- the test
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_jupyterlab_and_its_first_panel_redraws_when_moved(
    notebook, lab, browser, shots, record_property
):
    server, rels = lab
    name, rel = notebook.stem, rels[notebook.stem]
    before = _sha256(notebook)
    page_errors: list[str] = []
    page = browser.new_page()  # browser: the series' one context
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    pictures = [shots / f"{name}_panel.png", shots / f"{name}_full.png", shots / f"{name}_failure.png"]
    try:
        # a workspace per notebook: Lab restores no tab (and starts no kernel) of an earlier one
        page.goto(
            server.url(f"lab/workspaces/{name}/tree/{rel}"), wait_until="domcontentloaded", timeout=LOAD_TIMEOUT_MS
        )
        page.wait_for_function(WAIT_NOTEBOOK_JS, timeout=LOAD_TIMEOUT_MS)
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=LOAD_TIMEOUT_MS)
        page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
        dialog = page.locator(".jp-Dialog .jp-mod-accept")  # only if the notebook names no kernel
        if dialog.count():
            dialog.first.click()

        result = page.evaluate(RUN_ALL_JS, RUN_TIMEOUT_MS)
        assert result["path"] == rel
        assert result["kernel_name"] == "python3", result["kernel_name"]
        assert result["kernel_status"] == "idle", f"kernel still {result['kernel_status']}"
        assert Path(result["kernel_prefix"]).resolve() == Path(sys.prefix).resolve(), (
            f"kernel runs the Python at {result['kernel_prefix']}, not this venv ({sys.prefix})"
        )
        errors = [
            (c["index"], o.get("ename"), o.get("evalue"))
            for c in result["cells"]
            for o in c["outputs"]
            if o.get("output_type") == "error"
        ]
        assert not errors, f"cells raised: {errors}"
        not_run = [c["index"] for c in result["cells"] if c["execution_count"] is None]
        assert result["ok"] and not not_run, f"run-all ok={result['ok']}, cells not executed: {not_run}"

        # Rendered in the DOM, not just present in the kernel's replies: every widget and plotly
        # output of the notebook (more in the DOM: Output widgets nest them).
        mimes = [m for c in result["cells"] for o in c["outputs"] for m in o.get("data", {})]
        want_widgets = mimes.count("application/vnd.jupyter.widget-view+json")
        want_plots = mimes.count("application/vnd.plotly.v1+json")
        assert want_widgets >= 1, "no widget output"
        page.wait_for_function(
            f"() => {{ const r = ({RENDERED_JS})(); return r.widgets >= {want_widgets} "
            f"&& r.plots >= {max(want_plots, 1)}; }}",
            timeout=REDRAW_TIMEOUT_MS,
        )
        _assert_no_error_outputs(page)

        # Move the first panel's first control: the kernel redraws that panel's figure.
        panels = page.evaluate(MARK_PANELS_JS)
        assert panels, "no widget panel with a control and a plotly figure"
        drew = page.evaluate(SIGNATURE_JS, 0)
        assert drew, "the first panel draws nothing"
        moved = _move(page, 0, panels[0]["kind"])
        page.wait_for_function(
            f"() => {{ const s = ({SIGNATURE_JS})(0); return s && s !== {json.dumps(drew)}; }}",
            timeout=REDRAW_TIMEOUT_MS,
        )
        _assert_no_error_outputs(page)
        record_property("moved", f"{panels[0]['label'] or panels[0]['kind']}: {moved}")

        page.wait_for_timeout(500)
        page.locator('[data-tspike-panel="0"]').screenshot(path=str(pictures[0]))
        if os.environ.get("TSPIKE_SCREENSHOT_DIR"):  # the whole notebook, for a reader: seconds, so on request
            # Whole notebook in one picture: grow the viewport to the notebook's height.
            height = page.evaluate(
                "() => Math.max(...Array.from(document.querySelectorAll("
                "'.jp-NotebookPanel-notebook, .jp-WindowedPanel-inner')).map(e => e.scrollHeight))"
            )
            page.set_viewport_size({"width": 1400, "height": int(min(max(height + 250, 1000), 16000))})
            page.evaluate(
                "() => document.querySelectorAll('.jp-WindowedPanel-outer, .jp-NotebookPanel-notebook')"
                ".forEach(e => { e.scrollTop = 0; })"
            )  # from the top, not from the moved panel
            page.wait_for_timeout(1000)
            page.screenshot(path=str(pictures[1]))
        print(
            f"{rel}: {len(panels)} panel(s), {want_plots} plotly output(s); moved "
            f"{panels[0]['label'] or panels[0]['kind']!r}: {moved}; page errors: {page_errors}"
        )
    except Exception:
        page.screenshot(path=str(pictures[2]))
        raise
    finally:
        saved = _publish(pictures)
        record_property("screenshots", ", ".join(map(str, saved)))
        page.close()
        server.shutdown_kernels()
    assert _sha256(notebook) == before, f"{notebook} was modified on disk by the run"
