"""The chat page at `/`, in a real browser (Debian's headless chromium through selenium) against real `vkmtp serve`
processes with the embedded demo model: a reply streams in with its speed and MTP acceptance, Stop frees the slot,
the conversation survives a reload, model markup shows as text, the page asks no other host for anything,
`--no-webui` turns it off and `--api-key` protects the API while the page sends the key it is given."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.server.live_server import free_port, wait_until_serving

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
BOUND = 120  # seconds: a failure bound for every wait, never a speed assumption
PAGE_FILES = ["/", "/webui/app.js", "/webui/markdown.js", "/webui/chart.js", "/webui/style.css"]
ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition, what: str, timeout: float = BOUND):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Serve:
    """`vkmtp serve` (embedded demo model, default backend) as a subprocess on a free 127.0.0.1 port."""

    def __init__(self, cwd: Path, *flags: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "VKMTP_MODEL"}
        cmd = [sys.executable, "-m", "vkmtp.cli.main", "serve", "--port", str(self.port), "--log-level", "warning"]
        self.log = open(cwd / f"serve-{self.port}.log", "w+")
        self.proc = subprocess.Popen([*cmd, *flags], cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=self.url, timeout=BOUND)
        wait_until_serving(self.port, self.proc, self._output, timeout=BOUND)

    def _output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def browser():
    """Headless chromium with the performance log on (it lists every request the page makes)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: run tools/setup.sh (it installs vkmtp's test extra)")
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run tools/setup.sh (it installs chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,860", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-default-apps", "--disable-sync"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(BOUND)
    driver.requests = []  # every Network.requestWillBeSent seen so far

    def drain():
        for entry in driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                driver.requests.append(message["params"]["request"])
        return driver.requests

    driver.drain = drain
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Serve(tmp_path_factory.mktemp("webui"))
    yield srv
    srv.stop()


def by_css(driver, css):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def text_of(driver, css) -> str:
    found = by_css(driver, css)
    return found[-1].text if found else ""


def set_field(driver, element_id: str, value: str) -> None:
    """Type into a settings field as a person would (its change event saves it)."""
    from selenium.webdriver.common.keys import Keys

    (field,) = by_css(driver, f"#{element_id}")
    field.clear()
    field.send_keys(value, Keys.TAB)


def send(driver, text: str) -> None:
    (box,) = by_css(driver, "#input")
    box.send_keys(text)
    by_css(driver, "#send")[0].click()


def open_page(driver, url: str) -> None:
    driver.get(url + "/")
    wait_for(lambda: "vkmtp-demo" in text_of(driver, "#model"), "the header to show the model from /props")


def test_chat_page_streams_stops_keeps_and_escapes(browser, server, tmp_path):
    sizes = {}
    for path in PAGE_FILES:
        r = server.http.get(path)
        assert r.status_code == 200, path
        sizes[path] = len(r.content)
    assert sum(sizes.values()) < 200_000, sizes
    assert "default-src 'none'" in server.http.get("/").headers["content-security-policy"]

    open_page(browser, server.url)
    assert "slot" in text_of(browser, "#server-info") and "MTP on" in text_of(browser, "#server-info")

    # a reply streams in, then the stats line from the final chunk's timings
    set_field(browser, "max_tokens", "48")
    set_field(browser, "seed", "7")
    send(browser, "Write a function that adds two numbers.")
    stats = wait_for(lambda: text_of(browser, ".msg.assistant > .stats"), "the reply's stats line")
    assert "decode" in stats and "tok/s" in stats and "MTP drafted" in stats and "accepted" in stats, stats
    assert text_of(browser, ".msg.assistant > .body").strip()
    assert by_css(browser, "#send")[0].is_displayed() and not by_css(browser, "#stop")[0].is_displayed()
    browser.save_screenshot(str(tmp_path / "webui.png"))
    if os.environ.get("VKMTP_WEBUI_SCREENSHOT"):  # refresh docs/webui.png: VKMTP_WEBUI_SCREENSHOT=docs/webui.png
        browser.save_screenshot(str(ROOT / os.environ["VKMTP_WEBUI_SCREENSHOT"]))

    # Stop during a long reply: the reply ends where it was and the server frees the slot
    set_field(browser, "max_tokens", "3000")
    send(browser, "Tell me a long story.")
    wait_for(lambda: by_css(browser, "#stop")[0].is_displayed(), "the Stop button")
    wait_for(lambda: len(by_css(browser, ".msg.assistant")) == 2 and
             len(text_of(browser, ".msg.assistant > .body").strip()) > 20, "the long reply to stream in")
    wait_for(lambda: any(s["is_processing"] for s in server.http.get("/slots").json()), "a busy slot")
    by_css(browser, "#stop")[0].click()
    wait_for(lambda: text_of(browser, ".msg.assistant > .status") == "stopped", "the reply to show 'stopped'")
    wait_for(lambda: not any(s["is_processing"] for s in server.http.get("/slots").json()),
             "/slots to show the slot free after Stop")
    assert by_css(browser, "#send")[0].is_displayed()
    stopped_text = text_of(browser, ".msg.assistant > .body")
    assert stopped_text.strip() and len(by_css(browser, ".msg.assistant > .stats")) == 1  # no timings: it was cut

    # a reload keeps the conversation (localStorage)
    browser.refresh()
    wait_for(lambda: len(by_css(browser, ".msg")) == 4, "the conversation after a reload")
    assert "adds two numbers" in by_css(browser, ".msg.user")[0].text
    assert text_of(browser, ".msg.assistant > .body") == stopped_text
    assert "decode" in by_css(browser, ".msg.assistant > .stats")[0].text

    # model output is text: the renderer builds DOM nodes, and a stored reply with markup shows as text
    hostile = '<img src=x onerror="window.pwned=1"> <script>window.pwned=2</script> **bold** `code`\n```\n<b>x</b>\n```'
    rendered = browser.execute_async_script(
        """const [text, done] = arguments;
        import('/webui/markdown.js').then(({renderMarkdown}) => {
          const box = document.createElement('div');
          box.append(renderMarkdown(text));
          done({html: box.innerHTML, text: box.textContent,
                tags: [...box.querySelectorAll('*')].map(n => n.tagName.toLowerCase())});
        });""",
        hostile,
    )
    assert set(rendered["tags"]) <= {"p", "strong", "code", "div", "span", "button", "pre", "br"}, rendered
    assert "<img src=x" in rendered["text"] and "<b>x</b>" in rendered["text"]
    browser.execute_script(
        """const chats = JSON.parse(localStorage.getItem('vkmtp.chats'));
        chats.at(-1).messages.push({role: 'user', content: '<img src=y onerror="window.pwned=3">'},
                                   {role: 'assistant', content: arguments[0]});
        localStorage.setItem('vkmtp.chats', JSON.stringify(chats));""",
        hostile,
    )
    browser.refresh()
    wait_for(lambda: len(by_css(browser, ".msg")) == 6, "the crafted messages after a reload")
    last = by_css(browser, ".msg.assistant > .body")[-1]
    assert "<img src=x" in last.text and "<script>" in last.text
    assert not by_css(browser, "#messages img, #messages script, #messages b")
    assert browser.execute_script("return window.pwned") is None

    # every request the page made went to this server
    urls = [r["url"] for r in browser.drain()]
    assert any(u.endswith("/v1/chat/completions") for u in urls) and any(u.endswith("/props") for u in urls)
    foreign = [u for u in urls if not u.startswith(server.url + "/") and not u.startswith(("data:", "blob:"))]
    assert not foreign, foreign
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_no_webui_answers_404(tmp_path):
    srv = Serve(tmp_path, "--no-webui")
    try:
        for path in ("/", "/webui/app.js"):
            r = srv.http.get(path)
            assert r.status_code == 404 and r.json()["error"]["code"] == 404, (path, r.text)
        assert srv.http.get("/props").status_code == 200
    finally:
        srv.stop()


def test_api_key_protects_the_api_and_the_page_sends_it(browser, tmp_path):
    srv = Serve(tmp_path, "--api-key", "sesame-123")
    try:
        assert srv.http.get("/props").status_code == 401
        assert srv.http.post("/v1/chat/completions", json={"messages": []}).status_code == 401
        assert srv.http.get("/").status_code == 200 and srv.http.get("/webui/app.js").status_code == 200

        browser.get(srv.url + "/")
        wait_for(lambda: by_css(browser, "#key-bar")[0].is_displayed(), "the page to ask for the API key")
        by_css(browser, "#api-key")[0].send_keys("sesame-123")
        by_css(browser, "#key-save")[0].click()
        wait_for(lambda: "vkmtp-demo" in text_of(browser, "#model"), "/props with the key")
        set_field(browser, "max_tokens", "8")
        send(browser, "hi")
        wait_for(lambda: text_of(browser, ".msg.assistant > .stats"), "a reply with the key")
        api = [r for r in browser.drain() if r["url"].startswith(srv.url) and
               r["url"].split(srv.url)[1] in ("/props", "/slots", "/metrics", "/v1/chat/completions")]
        keyed = [r["url"] for r in api if r["headers"].get("Authorization") == "Bearer sesame-123"]
        assert any(u.endswith("/v1/chat/completions") for u in keyed) and any(u.endswith("/props") for u in keyed)
        assert browser.execute_script("return localStorage.getItem('vkmtp.apiKey')") == "sesame-123"
    finally:
        srv.stop()
