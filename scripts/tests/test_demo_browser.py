"""The showcase in a real browser: ``python scripts/demo.py`` runs as a user starts it (a subprocess on a free port,
pointed at tiny real checkpoints, conftest.py), headless Chromium loads the page, a sentence is typed into each tab
and the rendered result is checked against the API's answer; a screenshot of every tab is saved in this test's
temporary folder. Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); without them the
test skips locally and fails in CI."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import pytest

from scripts import REPO_ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SENTENCE = "A wonderful, moving film with a brilliant cast."
ENGLISH = "Two dogs play in the snow."
SAMPLING = {"max_new_tokens": 60, "temperature": 0.9, "top_k": 20, "top_p": 0.95, "seed": 11}


@pytest.fixture(autouse=True, scope="session")
def _need_chromium():
    """Checked before the checkpoints are built: a skip (or, in CI, a failure) costs nothing."""
    if CHROMIUM and CHROMEDRIVER:
        return
    why = "headless Chromium is not installed (apt-get install chromium chromium-driver)"
    if os.environ.get("CI") and os.environ.get("MY_LLM_DATA"):
        pytest.fail(f"{why}; .ci/run installs it, so in CI this test must run")
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(demo_root, tmp_path_factory):
    """``python scripts/demo.py --root <tiny checkpoints> --port N``; yields its base URL."""
    root, _ = demo_root
    port = _free_port()
    log = tmp_path_factory.mktemp("demo_server") / "server.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "scripts" / "demo.py"), "--root", str(root),
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the showcase did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="demo_chromium_")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                "--window-size=1280,1000", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, condition, what: str, timeout: float = 30):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout).until(lambda d: condition(d))
    except TimeoutException:
        errors = " | ".join(e.text for e in driver.find_elements("css selector", ".error") if e.text)
        pytest.fail(f"timed out waiting for {what}; errors shown: {errors or 'none'}")


def _type(driver, element_id: str, text: str) -> None:
    box = driver.find_element("id", element_id)
    box.clear()
    box.send_keys(text)


def _tab(driver, name: str) -> None:
    driver.find_element("css selector", f'nav button[data-tab="{name}"]').click()


def test_every_tab_works_in_headless_chromium(server, browser, tmp_path):
    d = browser
    d.get(server + "/")
    _wait(d, lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "1", "the model list")
    api = httpx.Client(base_url=server, timeout=60)

    # classify: bars with the API's probabilities, for the first (stage 1) model
    model = d.find_element("id", "classify-model").get_attribute("value")
    assert model == "stage1_mlp/mlp"
    _type(d, "classify-text", SENTENCE)
    d.find_element("id", "classify-run").click()
    rows = _wait(d, lambda d: d.find_elements("css selector", "#classify-result .bar-row"), "the class bars")
    want = api.post("/api/classify", json={"model": model, "text": SENTENCE}).json()
    shown = {r.get_attribute("data-label"): r.find_element("class name", "value").text for r in rows}
    assert shown == {label: f"{100 * p:.2f}%" for label, p in zip(want["labels"], want["probs"])}
    d.save_screenshot(str(tmp_path / "classify.png"))

    # generate: the streamed text on the page is the text the API gives for the same seed
    _tab(d, "generate")
    _type(d, "generate-prompt", "ROMEO:")
    for key, value in SAMPLING.items():
        _type(d, f"generate-{key}", str(value))
    model = d.find_element("id", "generate-model").get_attribute("value")
    d.find_element("id", "generate-run").click()
    status = d.find_element("id", "generate-status")
    _wait(d, lambda d: status.get_attribute("data-state") in ("done", "error"), "the end of the stream")
    assert status.get_attribute("data-state") == "done", d.find_element("id", "generate-error").text
    want = api.post("/api/generate", json={"model": model, "prompt": "ROMEO:", "stream": False, **SAMPLING}).json()
    shown = d.execute_script("return document.getElementById('generate-text').textContent")
    assert shown == want["text"] and len(shown) > 10
    assert int(status.get_attribute("data-pieces")) > 1
    d.save_screenshot(str(tmp_path / "generate.png"))

    # translate: the French sentence and one heatmap cell per (French token, English token)
    _tab(d, "translate")
    _type(d, "translate-text", ENGLISH)
    d.find_element("id", "translate-run").click()
    _wait(d, lambda d: d.find_elements("css selector", "#translate-heatmap td.cell"), "the attention heatmap")
    model = d.find_element("id", "translate-model").get_attribute("value")
    want = api.post("/api/translate", json={"model": model, "text": ENGLISH, "beam_size": 5}).json()
    assert d.find_element("id", "translate-output").text == want["translation"].strip()
    cells = d.find_elements("css selector", "#translate-heatmap td.cell")
    assert len(cells) == len(want["tgt_tokens"]) * len(want["src_tokens"]) > 0
    assert float(cells[0].get_attribute("data-v")) == pytest.approx(want["attention"][0][0])
    d.save_screenshot(str(tmp_path / "translate.png"))

    # compare: one row per translation model, each ready one with its time
    _tab(d, "compare")
    from selenium.webdriver.support.ui import Select
    Select(d.find_element("id", "compare-task")).select_by_value("translate")
    _type(d, "compare-text", ENGLISH)
    d.find_element("id", "compare-run").click()
    rows = _wait(d, lambda d: d.find_elements("css selector", "#compare-table tr[data-model]"), "the comparison")
    listing = [m for m in api.get("/api/models").json()["models"] if m["task"] == "translate"]
    assert [r.get_attribute("data-model") for r in rows] == [m["id"] for m in listing]
    for row, m in zip(rows, listing):
        ms = row.find_element("class name", "ms").text
        assert (ms != "—" and float(ms) > 0) if m["status"] == "ready" else ms == "—", (m["id"], row.text)
    assert rows[-1].get_attribute("data-model") == "stage5_gpt/gpt_translate"
    d.save_screenshot(str(tmp_path / "compare.png"))

    _tab(d, "models")
    _wait(d, lambda d: d.find_elements("css selector", "#models-table tr[data-model]"), "the model table")
    assert "cd stage2_rnn_lstm && python train.py" in d.find_element("id", "models-table").text  # a missing one
    d.save_screenshot(str(tmp_path / "models.png"))
    for name in ("classify", "generate", "translate", "compare", "models"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    print(f"screenshots: {tmp_path}")


def test_a_live_server_sends_the_stream_in_pieces_and_survives_bad_input(server):
    """Over a real socket the text arrives in many reads (it is not buffered until the end)."""
    body = {"model": "stage5_gpt/gpt", "prompt": "ROMEO:", **SAMPLING, "max_new_tokens": 200}
    with httpx.stream("POST", server + "/api/generate", json=body, timeout=60) as r:
        assert r.status_code == 200
        reads = [chunk for chunk in r.iter_raw()]
    assert len(reads) > 1 and b"event: done" in reads[-1]
    assert httpx.post(server + "/api/classify", json={"model": "stage1_mlp/mlp", "text": "x" * 5000}).status_code == 422
    assert httpx.post(server + "/api/generate", content=b"\xff\xfe", timeout=10).status_code == 422
    assert httpx.get(server + "/api/models").status_code == 200
