"""`hfadapt ui` in a real Chromium (Playwright): compose the tiny offline recipe, train it and watch it,
read its report, try it, stop and resume a second run, and the bad inputs, each one line that changes
nothing. The browser is the system Chromium (`.ci/run` installs it) or Playwright's own."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hfadapt.core.errors import HfadaptError
from hfadapt.ui import form
from hfadapt.ui.safety import auth_pair, confined

REPO = Path(__file__).resolve().parents[1]
TINY = "text/tiny-sentiment-offline"


# ---- without a browser -------------------------------------------------------------------------------
def test_paths_are_confined(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert confined(str(runs / "a.yaml"), [runs], "save to") == (runs / "a.yaml").resolve()
    for bad in ("../x.yaml", str(runs / ".." / "x.yaml"), "/etc/hosts"):
        with pytest.raises(HfadaptError, match="save to"):
            confined(bad, [runs], "save to")


def test_other_hosts_need_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HFADAPT_UI_AUTH", raising=False)
    assert auth_pair(None, "127.0.0.1") is None
    with pytest.raises(HfadaptError, match="--auth"):
        auth_pair(None, "0.0.0.0")
    assert auth_pair("me:secret", "0.0.0.0") == ("me", "secret")
    monkeypatch.setenv("HFADAPT_UI_AUTH", "me:x")
    assert auth_pair(None, "0.0.0.0") == ("me", "x")
    with pytest.raises(HfadaptError, match="USER:PASS"):
        auth_pair("nopassword", "127.0.0.1")


def test_form_follows_the_schema_and_places_messages() -> None:
    sections = form.form_fields("text-classification", "lora")
    fields = {s.path: s for specs in sections.values() for s in specs}
    assert fields["model.dtype"].kind == "choice" and "bfloat16" in fields["model.dtype"].choices
    assert fields["train.gradient_checkpointing"].kind == "bool"
    assert fields["data.text_column"].kind == "text" and not fields["data.text_column"].advanced
    assert fields["train.weight_decay"].advanced and "adapter.r" in fields
    assert "adapter.init_r" not in fields  # adalora's, not lora's
    assert "adapter.init_r" in {s.path for specs in form.form_fields("text-classification", "adalora").values() for s in specs}
    raw = form.parse("task: text-classification\ntrain: {epochs: 2}\n")
    form.set_value(raw, "train.epochs", form.typed(fields["train.epochs"], "7"))
    form.set_value(raw, "train.learning_rate", form.typed(fields["train.learning_rate"], "5e-4"))  # the default: left out
    assert raw["train"] == {"epochs": 7}
    placed = form.place(["train.epochs: bad", "train.epochz: unknown field", "oops"], list(fields))
    assert placed == {"train.epochs": ["train.epochs: bad"], "train": ["train.epochz: unknown field"], "": ["oops"]}


def test_ui_without_gradio_says_how_to_install(tmp_path: Path) -> None:
    blocker = tmp_path / "gradio.py"
    blocker.write_text("raise ImportError('no gradio here')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    out = subprocess.run([sys.executable, "-m", "hfadapt", "ui", "--port", "1"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == "hfadapt: error: ui: Gradio is not installed; pip install 'hfadapt[ui]'"


# ---- in the browser ----------------------------------------------------------------------------------
def _chromium() -> str | None:
    return os.environ.get("HFADAPT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory):
    """The UI on a fresh runs folder, as a separate process (as users start it), with no Hub token."""
    work = tmp_path_factory.mktemp("ui")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HOME": str(work / "hf"), "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("HF_TOKEN", None)
    log = open(work / "ui.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "hfadapt", "ui", "--runs", "runs", "--port", str(port)],
                            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, (work / "ui.log").read_text()
            time.sleep(0.3)
    yield {"url": url, "work": work, "proc": proc, "env": env}
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def page(ui):
    sync_api = pytest.importorskip("playwright.sync_api")
    path = _chromium()
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=path, args=["--no-sandbox"]) if path else p.chromium.launch()
        except Exception as e:  # no browser at all: a failure, not a skip (CI installs chromium)
            pytest.fail(f"no Chromium to drive: install it (apt-get install chromium) or set HFADAPT_CHROMIUM ({e})")
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(30_000)
        start = time.time()
        pg.goto(ui["url"])
        pg.wait_for_selector("#recipe-source")
        ui["load_s"] = time.time() - start
        yield pg
        browser.close()


def _pick(page, elem_id: str, choice: str) -> None:
    box = page.locator(f"#{elem_id} input")
    box.click()
    box.fill(choice)
    page.locator(f"ul[role=listbox] li[aria-label='{choice}'], ul.options li:has-text('{choice}')").first.click()


def _yaml(page) -> str:
    return page.locator("#recipe-yaml textarea").input_value()


def _set_yaml(page, text: str) -> None:
    page.locator("#recipe-yaml textarea").fill(text)


def _shot(page, ui, name: str) -> None:
    page.screenshot(path=str(ui["work"] / f"tab-{name}.png"), full_page=False)


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def _wait_text(page, selector: str, needle: str, timeout: float = 120) -> str:
    deadline = time.time() + timeout
    text = ""
    while time.time() < deadline:
        text = page.locator(selector).inner_text()
        if needle in text:
            return "\n".join(line for line in text.splitlines() if needle in line)  # not the progress timer
        time.sleep(0.3)
    raise AssertionError(f"{selector}: waited {timeout}s for {needle!r}; shows {text!r}")


def _wait_mid_run(page, total: int, timeout: float = 150) -> int:
    """The progress line of a run between its first and its last step (the run is held there, see _held)."""
    import re

    deadline = time.time() + timeout
    text = ""
    while time.time() < deadline:
        text = page.locator("#train-progress").inner_text()
        m = re.search(rf"step (\d+)/{total}\b", text)
        if m and 0 < int(m.group(1)) < total and "finished" not in text:
            return int(m.group(1))
        time.sleep(0.3)
    raise AssertionError(f"#train-progress: waited {timeout}s for a step below {total}; shows {text!r}")


class _held:
    """Freezes a run's training process (SIGSTOP) once it has logged a step, so the page can be checked
    mid-run however fast the tiny run is; SIGCONT on exit (a SIGTERM sent meanwhile is delivered then)."""

    def __init__(self, ui_process, run_dir: Path, timeout: float = 150) -> None:
        self.ui_process, self.log, self.timeout = ui_process, run_dir / "train_log.jsonl", timeout

    def __enter__(self) -> "_held":
        import signal

        deadline = time.time() + self.timeout
        while not (self.log.is_file() and '"train/loss"' in self.log.read_text()):
            assert time.time() < deadline, f"{self.log}: no step logged in {self.timeout}s"
            time.sleep(0.005)
        self.trainers = [p for p in self.ui_process.children(recursive=True) if "train" in p.cmdline()]
        assert self.trainers, "no training process under the UI"
        for p in self.trainers:
            p.send_signal(signal.SIGSTOP)
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        for p in self.trainers:
            p.send_signal(signal.SIGCONT)


@pytest.mark.slow
def test_compose_train_report_try_stop_resume(ui, page) -> None:
    runs = ui["work"] / "runs"
    print(f"\nfirst page load: {ui['load_s']:.2f} s")
    assert ui["load_s"] < 10

    # Recipe: the tiny offline recipe; the form follows it, a field edits the YAML, a YAML typo shows under its field.
    _pick(page, "recipe-source", TINY)
    page.wait_for_function("document.querySelector('#f-train-epochs input, #f-train-epochs textarea')?.value === '5'")
    epochs = page.locator("#f-train-epochs input, #f-train-epochs textarea").first
    epochs.click()
    epochs.press("Control+a")
    epochs.type("1")  # keystrokes, as a person edits (the form listens to the user's input events)
    page.wait_for_function("document.querySelector('#recipe-yaml textarea').value.includes('epochs: 1')")
    text = _yaml(page)
    _set_yaml(page, text.replace("epochs: 1", "epochs: onee"))
    _wait_text(page, "#err-train-epochs", "train.epochs")
    page.locator("#f-train-epochs").scroll_into_view_if_needed()
    _shot(page, ui, "recipe")

    # bad inputs: an invalid recipe launch, a path outside the allowed folders: one line each, nothing started.
    _tab(page, "Train")
    page.locator("#train-launch").click()
    line = _wait_text(page, "#train-status", "hfadapt: error:")
    assert "train.epochs" in line and "\n" not in line.strip()
    assert not runs.exists() or not any(runs.iterdir())
    _tab(page, "Recipe")
    for bad in ("../outside.yaml", "/etc/hosts"):
        page.locator("#recipe-file input, #recipe-file textarea").first.fill(bad)
        page.locator("#recipe-load").click()
        _wait_text(page, "#recipe-status", "outside" if bad.startswith("/") else "'..'")
    assert _yaml(page) == text.replace("epochs: 1", "epochs: onee")  # nothing loaded
    page.locator("#recipe-save-path input, #recipe-save-path textarea").first.fill("../saved.yaml")
    page.locator("#recipe-save").click()
    _wait_text(page, "#recipe-status", "'..'")
    assert not (ui["work"].parent / "saved.yaml").exists()

    # Train: the first run, watched to the end.
    _set_yaml(page, text)
    _wait_text(page, "#recipe-errors", "valid recipe")
    _tab(page, "Train")
    import psutil

    ui_process = psutil.Process(ui["proc"].pid)
    cpu_before, t_before = sum(ui_process.cpu_times()[:2]), time.time()
    page.locator("#train-launch").click()
    _wait_text(page, "#train-status", "started tiny-sentiment-offline")
    with _held(ui_process, runs / "tiny-sentiment-offline"):
        _wait_mid_run(page, 20)  # the page follows the run's own files while it trains
    _wait_text(page, "#train-progress", "finished", timeout=150)
    cpu_share = (sum(ui_process.cpu_times()[:2]) - cpu_before) / (time.time() - t_before)
    print(f"UI process CPU while a run trains: {100 * cpu_share:.1f}% of one core")
    assert cpu_share < 0.5
    assert page.locator("#train-loss canvas, #train-loss svg").count() > 0
    _wait_text(page, "#train-evals", "accuracy")
    _shot(page, ui, "train")

    # Runs: the table, the report inline.
    _tab(page, "Runs")
    page.locator("#runs-refresh").click()
    _wait_text(page, "#runs-table", "finished")
    _pick(page, "runs-select", "tiny-sentiment-offline")
    page.locator("#runs-report-btn").click()
    frame = page.frame_locator("#report-frame")
    assert "tiny-sentiment-offline" in frame.locator("body").inner_text(timeout=60_000)
    _shot(page, ui, "runs")

    # Try: the same label and score as `hfadapt predict`.
    sentence = "the music was truly wonderful"
    _tab(page, "Try")
    _pick(page, "try-run", "tiny-sentiment-offline")
    page.locator("#try-text input, #try-text textarea").first.fill(sentence)
    page.locator("#try-go").click()
    page.wait_for_function("document.querySelector('#try-raw textarea').value.includes('label')", timeout=90_000)
    shown = json.loads(page.locator("#try-raw textarea").input_value())
    cli = subprocess.run([sys.executable, "-m", "hfadapt", "predict", str(runs / "tiny-sentiment-offline"), sentence],
                         capture_output=True, text=True, env=ui["env"], cwd=ui["work"], timeout=120)
    expected = json.loads(cli.stdout.strip().splitlines()[-1])
    assert shown["label"] == expected["label"] and shown["score"] == pytest.approx(expected["score"], abs=1e-6)
    _shot(page, ui, "try")

    # bad inputs: predict on a run that failed, push without a token.
    broken = runs / "broken"
    broken.mkdir()
    shutil.copy(runs / "tiny-sentiment-offline" / "recipe.yaml", broken / "recipe.yaml")
    (broken / "status.json").write_text(json.dumps({"state": "failed", "error": "RuntimeError: boom"}))
    before = sorted(p.name for p in broken.iterdir())
    _pick(page, "try-run", "broken")
    page.locator("#try-go").click()
    line = _wait_text(page, "#try-status", "hfadapt: error:")
    assert "has not finished" in line and sorted(p.name for p in broken.iterdir()) == before
    _tab(page, "Publish")
    _pick(page, "pub-run", "tiny-sentiment-offline")
    page.locator("#pub-repo input, #pub-repo textarea").first.fill("me/tiny")
    page.locator("#pub-go").click()
    line = _wait_text(page, "#pub-status", "hfadapt: error:")
    assert "token" in line
    _shot(page, ui, "publish")

    # Stop a second run (a checkpoint at the step reached) and resume it to the end.
    _tab(page, "Recipe")
    _set_yaml(page, text.replace("name: tiny-sentiment-offline", "name: tiny-b").replace("epochs: 1", "epochs: 2"))
    _wait_text(page, "#recipe-errors", "valid recipe")
    _tab(page, "Train")
    page.locator("#train-launch").click()
    _wait_text(page, "#train-status", "started tiny-b")
    with _held(ui_process, runs / "tiny-b"):
        _wait_mid_run(page, 40)
        page.locator("#train-stop").click()  # SIGTERM, delivered when the run goes on
    _wait_text(page, "#train-progress", "stopped at step", timeout=90)  # the process's own last line: it has exited
    stopped = runs / "tiny-b"
    assert [p.name for p in (stopped / "checkpoints").iterdir()] and json.loads((stopped / "status.json").read_text())["state"] == "interrupted"
    page.locator("#train-resume").click()
    _wait_text(page, "#train-status", "resumed tiny-b")
    _wait_text(page, "#train-progress", "finished", timeout=150)
    assert (stopped / "adapter").is_dir()


def test_curves_are_numbers_and_an_empty_first_frame_is_not_sent() -> None:
    import gradio as gr

    from hfadapt.ui.tab_train import _curve

    rows = [{"step": 10, "value": 0.6454, "series": "loss"}, {"step": 10, "value": None, "series": "lr"},
            {"step": 20, "value": 0.6442, "series": "loss"}]
    loss = _curve(rows, "loss", switched=False)
    assert list(loss["step"]) == [10, 20] and str(loss["value"].dtype) == "float64"  # not categories
    assert isinstance(_curve(rows, "lr", switched=False), type(gr.skip()))  # no point yet: nothing sent
    empty = _curve(rows, "lr", switched=True)  # another run picked: its (empty) curve replaces the last one's
    assert len(empty) == 0 and str(empty["value"].dtype) == "float64"
