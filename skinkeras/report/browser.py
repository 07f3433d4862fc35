"""Open an HTML file in headless Chromium and report what a reader would see: console errors, images, sections.

Talks the Chrome DevTools Protocol over `--remote-debugging-pipe` (file descriptors 3 and 4,
NUL-separated JSON), so it needs a Chromium binary and nothing else: no webdriver, no
websocket library, no browser download.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

# What the page is asked after it loaded: every <img> (decoded or not) and every <section id>.
_PAGE_PROBE = """(async () => {
  const images = Array.from(document.images);
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  return JSON.stringify({
    title: document.title,
    images: images.map(img => ({alt: img.alt, width: img.naturalWidth, height: img.naturalHeight,
                                complete: img.complete})),
    sections: Array.from(document.querySelectorAll('section[id]')).map(s => s.id),
    width: document.documentElement.scrollWidth,
    height: document.documentElement.scrollHeight,
  });
})()"""


class BrowserUnavailable(RuntimeError):
    """No Chromium binary was found."""


@dataclass
class PageCheck:
    """What the browser saw.

    Args:
        title: the document title.
        images: one dict per <img>: alt, width and height (natural, 0 when it did not decode), complete.
        sections: ids of the page's <section> elements, in order.
        console_errors: console.error calls, uncaught exceptions and resource/network errors.
        screenshot: PNG path of the full-page screenshot (None when not asked).
        width: page width in CSS pixels.
        height: page height in CSS pixels.
        requests: every URL the page requested (file, data, blob and http).
        interaction: what `interact` returned.
    """

    title: str
    images: list
    sections: list
    console_errors: list = field(default_factory=list)
    screenshot: str | None = None
    width: int = 0
    height: int = 0
    requests: list = field(default_factory=list)
    interaction: object = None

    @property
    def broken_images(self):
        """The images that did not decode (naturalWidth 0)."""
        return [img for img in self.images if not img["width"]]


def find_browser():
    """Path of a Chromium-family binary ($CHROMIUM first), or None."""
    candidates = [os.environ.get("CHROMIUM")] + [shutil.which(name) for name in BROWSERS]
    return next((c for c in candidates if c and os.path.isfile(c) and os.access(c, os.X_OK)), None)


class _Pipe:
    """One CDP connection over the two pipes; commands get ids, events are kept in order."""

    def __init__(self, write_fd, read_fd, timeout):
        self.write_fd, self.read_fd = write_fd, read_fd
        self.deadline = time.monotonic() + timeout
        self.buffer = b""
        self.events = []
        self.next_id = 0

    def send(self, method, params=None, session=None):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        return self._wait(lambda m: m.get("id") == self.next_id, method)

    def wait_event(self, method):
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        return self._wait(lambda m: m.get("method") == method, method)

    def _wait(self, matches, what):
        while True:
            while b"\0" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\0", 1)
                message = json.loads(raw)
                if matches(message):
                    if "error" in message:
                        raise RuntimeError(f"Chromium refused {what}: {message['error'].get('message')}")
                    return message.get("result", message.get("params", {}))
                if "method" in message:
                    self.events.append(message)
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"Chromium did not answer {what} in time")
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if ready:
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium exited while waiting for {what}")
                self.buffer += chunk


def _console_errors(events):
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            errors.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            errors.append(f"{entry.get('source', 'log')}: {entry.get('text', '')} {entry.get('url', '')}".strip())
    return errors


class Page:
    """The loaded page, for an `interact` callback: evaluate JavaScript, choose files, wait for a condition.

    Args:
        cdp: the CDP connection.
        session: the page's session id.
    """

    def __init__(self, cdp, session):
        self.cdp, self.session = cdp, session

    def evaluate(self, expression):
        """The JSON-able value of a JavaScript expression (promises awaited)."""
        found = self.cdp.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                   "returnByValue": True}, session=self.session)
        if "exceptionDetails" in found:
            raise RuntimeError(f"page script failed: {found['exceptionDetails'].get('text')}")
        return found["result"].get("value")

    def set_files(self, selector, paths):
        """Chooses files in an <input type=file>, as a user would (its change event fires)."""
        root = self.cdp.send("DOM.getDocument", session=self.session)["root"]["nodeId"]
        node = self.cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector}, session=self.session)
        self.cdp.send("DOM.setFileInputFiles", {"files": [os.path.abspath(p) for p in paths],
                                                "nodeId": node["nodeId"]}, session=self.session)

    def wait_for(self, expression, timeout=60):
        """Polls a JavaScript expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"the page did not reach {expression!r} in {timeout} s")


def check_page(html_path, screenshot=None, width=1366, height=768, timeout=60, browser=None, interact=None,
               block_network=True):
    """Loads an HTML file (or a URL) in headless Chromium, probes it, and optionally saves a full-page screenshot.

    For a file, network access is blocked for the page (a self-contained report needs none), so a
    reference to anything outside the file shows up as a console error. For a URL (a local server) every
    request is recorded instead, so a test can check that none left the server.

    Args:
        html_path: the HTML file, or an http:// URL.
        screenshot: PNG path for a full-page screenshot (taken after `interact`), or None.
        width: viewport width (a laptop screen by default).
        height: viewport height.
        timeout: seconds for the whole check.
        browser: Chromium binary (default: `find_browser()`).
        interact: optional callable(`Page`) run after the page loaded (choose a file, click, wait).
        block_network: block http(s) and websockets (only for files).

    Returns:
        a `PageCheck`.
    """
    browser = browser or find_browser()
    if not browser:
        raise BrowserUnavailable(f"no Chromium found (tried $CHROMIUM, {', '.join(BROWSERS)}); "
                                 "install Debian's chromium package")
    is_url = str(html_path).startswith(("http://", "https://"))
    url = str(html_path) if is_url else "file://" + os.path.abspath(html_path)
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()

    def wire_pipes():
        # The child reads commands on fd 3 and answers on fd 4. The pipe ends may already sit on 3 or 4,
        # so they are moved above both first, and the copies made inheritable (pipes are close-on-exec).
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w)]
        for target, fd in zip((3, 4), high):
            os.dup2(fd, target)
            os.set_inheritable(target, True)

    with tempfile.TemporaryDirectory(prefix="skinkeras-chromium-") as profile:
        args = [browser, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--allow-file-access-from-files",
                f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"]
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, close_fds=False, preexec_fn=wire_pipes)
        os.close(to_browser_r)
        os.close(from_browser_w)
        try:
            cdp = _Pipe(to_browser_w, from_browser_r, timeout)
            target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network", "DOM"):
                cdp.send(f"{domain}.enable", session=session)
            if block_network and not is_url:
                cdp.send("Network.setBlockedURLs", {"urls": ["http://*", "https://*", "ws://*", "wss://*"]},
                         session=session)
            cdp.send("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
            cdp.send("Page.navigate", {"url": url}, session=session)
            cdp.wait_event("Page.loadEventFired")
            probe = cdp.send("Runtime.evaluate", {"expression": _PAGE_PROBE, "awaitPromise": True,
                                                  "returnByValue": True}, session=session)
            if "exceptionDetails" in probe:
                raise RuntimeError(f"page probe failed: {probe['exceptionDetails'].get('text')}")
            interaction = interact(Page(cdp, session)) if interact else None
            if interact:
                probe = cdp.send("Runtime.evaluate", {"expression": _PAGE_PROBE, "awaitPromise": True,
                                                      "returnByValue": True}, session=session)
            seen = json.loads(probe["result"]["value"])
            if screenshot:
                shot = cdp.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                                session=session)
                os.makedirs(os.path.dirname(os.path.abspath(screenshot)), exist_ok=True)
                with open(screenshot, "wb") as f:
                    f.write(base64.b64decode(shot["data"]))
            errors = _console_errors(cdp.events)
            try:
                cdp.send("Browser.close")
            except (RuntimeError, TimeoutError, OSError):
                pass
        finally:
            os.close(to_browser_w)
            os.close(from_browser_r)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    requests = [e["params"]["request"]["url"] for e in cdp.events if e.get("method") == "Network.requestWillBeSent"]
    return PageCheck(title=seen["title"], images=seen["images"], sections=seen["sections"], console_errors=errors,
                     screenshot=screenshot, width=seen["width"], height=seen["height"], requests=requests,
                     interaction=interaction)
