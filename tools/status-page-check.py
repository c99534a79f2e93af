#!/usr/bin/env python3
"""Checks the status page in a real browser: headless Chromium renders `GET /` of the admin
listener of `azure-costs-proxy demo`, and the check proves that

1. the page is served as a status page must be: 200, HTML, and the headers
   `Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'`,
   `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`, `Cache-Control: no-store`;
2. the rendered DOM shows, as text a reader sees (not in an attribute, a <style> or the
   <title>), every route prefix and every token state that `/status.json` reports (a state
   such as `backing_off` may read `backing off`): the page and the JSON tell the same facts;
3. the browser enforced that policy and found nothing to refuse: no Content Security Policy
   message on the browser console (an inline script, an image, a font, a frame, a style sheet
   from elsewhere would each log one).

How the console is read: Chromium started with `--enable-logging=stderr` writes every console
message of the page to its stderr as a log line `[pid:tid:time:INFO:CONSOLE:line] "message",
source: URL (line)`; a CSP violation is such a message naming the "Content Security Policy"
("Executing inline script violates the following Content Security Policy directive ...",
"Loading the image '...' violates ..."; older versions say "Refused to ..."). One Chromium
run takes the screenshot (`--screenshot`) and prints the DOM after the load event
(`--dump-dom`); every violation a static page can cause happens before that event.

`--self-test` proves the detector can fail, with the same browser run the check uses: a
Python server on 127.0.0.1 sends the same headers with a page that breaks the policy (an
inline <script> and an <img> from another 127.0.0.1 port) and a clean page (a <style> element
and a style attribute, both allowed by 'unsafe-inline'). The first must yield a violation for
each (and the other port must see no request: the browser blocked it); the second none, and
the DOM check must pass on it and report a missing fact. `.ci/run` runs it before the check.

Usage:  tools/status-page-check.py BIN OUT      BIN: the proxy binary; OUT: a folder that gets
                                                status-page.png, status-page.html, status.json,
                                                status-page.chromium.log and demo.log
        tools/status-page-check.py --self-test [OUT]   (OUT: keep its files there)

Needs Python 3.11 (stdlib only) and Debian's `chromium`. Everything stays on 127.0.0.1 (the
browser resolves no name and uses no proxy); every wait is bounded, the whole run by
TOTAL_SECONDS; the demo and the browser run in process groups of their own, killed on exit.
"""

import argparse
import contextlib
import html.parser
import http.server
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

TOTAL_SECONDS = 120
STARTUP_SECONDS = 30
BROWSER_SECONDS = 45
HTTP_SECONDS = 5
ATTEMPTS = 3
EXPECTED_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
# The proxy's demo prints `Admin: http://127.0.0.1:PORT/readyz and ...`.
ADMIN_LINE = re.compile(r"Admin: (http://[^/\s]+)")
# A Chromium log line starts `[pid:tid:MMDD/HHMMSS.micros:LEVEL:...]`; a console message is one
# whose source is `CONSOLE` (`CONSOLE:12]` today, `CONSOLE(12)]` in older versions).
LOG_RECORD = re.compile(r"^\[\d+:\d+:\d{4}/\d{6}\.\d+:", re.MULTILINE)
CONSOLE = re.compile(r"^\[[^\]]*:CONSOLE[:(]")
CONSOLE_END = re.compile(r", source: [^\n]* \(\d+\)$", re.MULTILINE)
CSP_WORDS = re.compile(r"Content[ -]Security[ -]Policy", re.IGNORECASE)
# The characters a route prefix may continue with: a prefix counts only as a whole path.
PATH_CHAR = r"[\w/{}~%.-]"
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class CheckFailed(Exception):
    """A failed check: the message says what was expected and what came."""


# --- small helpers -------------------------------------------------------------------------


class Deadline:
    """The time left of a bounded wait."""

    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self):
        return max(0.0, self.end - time.monotonic())

    def passed(self):
        return self.left() == 0.0


def step(message):
    print(f"-- {message}", flush=True)


def http_get(url, timeout=HTTP_SECONDS):
    """GET on loopback without any proxy: (status, headers as a lower-cased dict, body bytes).
    Raises OSError when nothing answers."""
    if urllib.parse.urlsplit(url).hostname not in LOOPBACK_HOSTS:
        raise CheckFailed(f"refusing to leave loopback: {url}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status, lower_headers(response.headers), response.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, lower_headers(e.headers), e.read()


def get_or_fail(url):
    """http_get, with no answer as a failed check."""
    try:
        return http_get(url)
    except OSError as e:
        raise CheckFailed(f"GET {url}: no answer in {HTTP_SECONDS} s ({e})") from None


def lower_headers(headers):
    return {name.lower(): value for name, value in headers.items()}


def kill_group(proc, grace=5.0):
    """Ends a process started with start_new_session and everything it started."""
    if proc is None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # The leader may be gone while a child of its group lives on.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def on_alarm(signum, frame):
    raise CheckFailed(f"the check took longer than {TOTAL_SECONDS} s")


def on_termination(signum, frame):
    raise SystemExit(f"stopped by signal {signum}")


# --- the browser -----------------------------------------------------------------------------


def chromium_version():
    if shutil.which("chromium") is None:
        raise CheckFailed("no chromium on PATH (Debian: apt-get install chromium)")
    try:
        done = subprocess.run(["chromium", "--version"], capture_output=True, text=True,
                              timeout=30, stdin=subprocess.DEVNULL, start_new_session=True)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CheckFailed(f"chromium --version: {e}") from None
    return done.stdout.strip()


def chromium_command(url, screenshot, profile):
    return [
        "chromium",
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1366,768",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-sync",
        # Nothing beyond loopback: no proxy, and every host name fails to resolve.
        "--no-proxy-server",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        # Console messages (CSP violations among them) as log lines on stderr.
        "--enable-logging=stderr",
        "--log-level=0",
        f"--screenshot={screenshot}",
        "--dump-dom",
        url,
    ]


def run_chromium(url, out, name):
    """Opens url once: the screenshot to OUT/NAME.png, the DOM to OUT/NAME.html, the browser's
    log to OUT/NAME.chromium.log. Returns (dom, console messages)."""
    screenshot = os.path.join(out, f"{name}.png")
    dom_path = os.path.join(out, f"{name}.html")
    log_path = os.path.join(out, f"{name}.chromium.log")
    with contextlib.suppress(FileNotFoundError):
        os.remove(screenshot)
    with tempfile.TemporaryDirectory(prefix="status-page-chromium-") as home, \
            open(dom_path, "wb") as dom_file, open(log_path, "wb") as log_file:
        # A throwaway home too: no crash report or cache of this run outlives it.
        env = dict(os.environ, HOME=home, XDG_CONFIG_HOME=home, XDG_CACHE_HOME=home)
        command = chromium_command(url, screenshot, os.path.join(home, "profile"))
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=dom_file,
                                stderr=log_file, env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=BROWSER_SECONDS)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"chromium did not finish {url} within {BROWSER_SECONDS} s "
                              f"(log: {log_path})") from None
        finally:
            kill_group(proc, grace=2.0)
    with open(log_path, encoding="utf-8", errors="replace") as f:
        log = f.read()
    with open(dom_path, encoding="utf-8", errors="replace") as f:
        dom = f.read()
    check_browser_output(url, code, dom, screenshot, log_path)
    return dom, console_messages(log)


def check_browser_output(url, code, dom, screenshot, log_path):
    if code != 0:
        raise CheckFailed(f"chromium exited with {code} on {url} (log: {log_path})")
    if "<html" not in dom.lower():
        raise CheckFailed(f"chromium printed no DOM for {url} (log: {log_path})")
    try:
        with open(screenshot, "rb") as f:
            signature = f.read(8)
    except FileNotFoundError:
        raise CheckFailed(f"chromium wrote no screenshot of {url} (log: {log_path})") from None
    if signature != b"\x89PNG\r\n\x1a\n":
        raise CheckFailed(f"{screenshot} is not a PNG")


def console_messages(log):
    """The page's console messages in a Chromium log. A message may span lines; it ends with
    `, source: URL (line)`, after which other lines (not all of them log records) follow."""
    starts = [m.start() for m in LOG_RECORD.finditer(log)] + [len(log)]
    records = (log[a:b] for a, b in zip(starts, starts[1:]))
    messages = []
    for record in records:
        if CONSOLE.match(record):
            end = CONSOLE_END.search(record)
            messages.append((record[:end.end()] if end else record).strip())
    return messages


def csp_violations(messages):
    return [m for m in messages if CSP_WORDS.search(m)]


# --- the page's facts ------------------------------------------------------------------------


class VisibleText(html.parser.HTMLParser):
    """The text of <body> a reader sees: no attribute, no <script>, <style>, <template> or
    <noscript> content. Each text node is kept apart, so that two table cells never merge."""

    HIDDEN = {"script", "style", "template", "noscript"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.in_body = False
        self.hidden = 0
        self.parts = []

    def handle_starttag(self, tag, attrs):
        if tag == "body":
            self.in_body = True
        elif tag in self.HIDDEN:
            self.hidden += 1

    def handle_endtag(self, tag):
        if tag in self.HIDDEN and self.hidden:
            self.hidden -= 1

    def handle_data(self, data):
        if self.in_body and not self.hidden:
            self.parts.append(data)


def visible_text(dom):
    parser = VisibleText()
    parser.feed(dom)
    parser.close()
    return " ".join(" ".join(parser.parts).split())


def expectations(status):
    """(route prefixes, token states) from a /status.json document; CheckFailed if its shape
    is not the one the page is checked against."""
    routes, tokens = status.get("routes"), status.get("tokens")
    if not isinstance(routes, list) or not routes:
        raise CheckFailed(f"/status.json: 'routes' is not a non-empty list: {routes!r}")
    if not isinstance(tokens, list) or not tokens:
        raise CheckFailed(f"/status.json: 'tokens' is not a non-empty list: {tokens!r}")
    prefixes = {r.get("prefix") if isinstance(r, dict) else None for r in routes}
    states = {t.get("state") if isinstance(t, dict) else None for t in tokens}
    for name, values in (("routes[].prefix", prefixes), ("tokens[].state", states)):
        if not all(isinstance(v, str) and v for v in values):
            raise CheckFailed(f"/status.json: a {name} is missing or not a string")
    return tuple(sorted(prefixes)), tuple(sorted(states))


def missing_facts(dom, prefixes, states):
    """What of the expected prefixes and states the page's visible text lacks."""
    text = visible_text(dom)
    missing = []
    for prefix in prefixes:
        pattern = rf"(?<!{PATH_CHAR}){re.escape(prefix)}(?!{PATH_CHAR})"
        if not re.search(pattern, text):
            missing.append(f"route prefix {prefix!r}")
    for state in states:
        words = "|".join(re.escape(w) for w in {state, state.replace("_", " ")})
        if not re.search(rf"(?<![\w-])(?:{words})(?![\w-])", text):
            missing.append(f"token state {state!r}")
    return missing


def header_problems(headers):
    """How a response's headers differ from the status page's (EXPECTED_HEADERS)."""
    problems = []
    for name, want in EXPECTED_HEADERS.items():
        got = headers.get(name)
        if name == "content-security-policy":
            same = got is not None and csp_directives(got) == csp_directives(want)
        else:
            same = got is not None and got.strip().lower() == want
        if not same:
            problems.append(f"{name}: {got!r}, expected {want!r}")
    if not headers.get("content-type", "").lower().startswith("text/html"):
        problems.append(f"content-type: {headers.get('content-type')!r}, expected text/html")
    return problems


def csp_directives(policy):
    directives = (d.split() for d in policy.split(";"))
    return {d[0].lower(): sorted(d[1:]) for d in directives if d}


# --- the check ----------------------------------------------------------------------------


def start_demo(binary, log_path):
    """`BIN demo` in a process group of its own; returns (process, queue of stdout lines).
    The data plane takes a free port; the admin listener its usual one, or a free one when
    that is taken (src/commands/demo.rs), so two runs do not collide."""
    log = open(log_path, "wb")
    proc = subprocess.Popen([binary, "demo", "--listen", "127.0.0.1:0"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                            start_new_session=True)
    log.close()
    lines = queue.Queue()

    def pump():
        for raw in proc.stdout:
            lines.put(raw.decode("utf-8", errors="replace"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def wait_for_admin(proc, lines, log_path, deadline):
    """The `http://HOST:PORT` of the admin listener, from the demo's `Admin:` line."""
    seen = []
    while not deadline.passed():
        try:
            line = lines.get(timeout=min(1.0, deadline.left()) or 0.01)
        except queue.Empty:
            continue
        if line is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=min(2.0, deadline.left()))
            break
        seen.append(line)
        match = ADMIN_LINE.search(line)
        if match:
            return match.group(1)
    code = proc.poll()
    state = (f"exited with {code}" if code is not None
             else f"printed no Admin: line in {STARTUP_SECONDS} s")
    raise CheckFailed(f"the demo {state}; stdout: {''.join(seen)!r}; stderr in {log_path}")


def wait_for_status(proc, admin, deadline):
    """The first /status.json document the admin listener answers with."""
    last = "no answer"
    while not deadline.passed():
        if proc.poll() is not None:
            raise CheckFailed(f"the demo exited with {proc.returncode} before /status.json "
                              "answered")
        try:
            code, _, body = http_get(f"{admin}/status.json")
            if code == 200:
                return parse_status(body)
            if code == 404:
                raise CheckFailed(f"{admin}/status.json answers 404 (a binary from before the "
                                  f"status page?): {body[:200]!r}")
            last = f"HTTP {code}: {body[:200]!r}"
        except OSError as e:
            last = str(e)
        time.sleep(0.2)
    raise CheckFailed(f"{admin}/status.json did not answer 200 in {STARTUP_SECONDS} s; "
                      f"last: {last}")


def parse_status(body):
    try:
        status = json.loads(body)
    except ValueError as e:
        raise CheckFailed(f"/status.json is not JSON ({e}): {body[:200]!r}") from None
    if not isinstance(status, dict):
        raise CheckFailed(f"/status.json is not an object: {body[:200]!r}")
    return status


def render_stable(admin, out):
    """Renders the page between two equal reads of /status.json (a token may change state
    while the browser runs: then again). Returns (status, dom, console messages)."""
    for attempt in range(1, ATTEMPTS + 1):
        before = parse_status(get_or_fail(f"{admin}/status.json")[2])
        dom, console = run_chromium(f"{admin}/", out, "status-page")
        after = parse_status(get_or_fail(f"{admin}/status.json")[2])
        if expectations(before) == expectations(after):
            return after, dom, console
        step(f"attempt {attempt}: token states changed while the page rendered "
             f"({list(expectations(before)[1])} -> {list(expectations(after)[1])}); again")
    raise CheckFailed(f"/status.json never stayed the same over {ATTEMPTS} renderings")


def check_page(admin, out):
    code, headers, _ = get_or_fail(f"{admin}/")
    problems = [f"GET / answered {code}"] if code != 200 else []
    problems += header_problems(headers)
    if problems:
        raise CheckFailed("GET / is not the status page:\n  " + "\n  ".join(problems))
    status, dom, console = render_stable(admin, out)
    with open(os.path.join(out, "status.json"), "w", encoding="utf-8") as f:
        json.dump(status, f, indent=2)
    prefixes, states = expectations(status)
    step(f"status {status.get('status')!r}; routes {list(prefixes)}; token states {list(states)}")
    report_console(console)
    problems = [f"not on the page: {m}" for m in missing_facts(dom, prefixes, states)]
    problems += [f"CSP violation: {v}" for v in csp_violations(console)]
    if problems:
        raise CheckFailed("the status page:\n  " + "\n  ".join(problems))


def report_console(console):
    step(f"console messages: {len(console)}")
    for message in console:
        print(f"   {message}")


def check(binary, out):
    os.makedirs(out, exist_ok=True)
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise CheckFailed(f"{binary} is not an executable file")
    log_path = os.path.join(out, "demo.log")
    proc = None
    try:
        step(f"starting {binary} demo")
        proc, lines = start_demo(binary, log_path)
        deadline = Deadline(STARTUP_SECONDS)
        admin = wait_for_admin(proc, lines, log_path, deadline)
        if urllib.parse.urlsplit(admin).hostname not in LOOPBACK_HOSTS:
            raise CheckFailed(f"the demo's admin listener is not on loopback: {admin}")
        wait_for_status(proc, admin, deadline)
        step(f"admin listener {admin} answers /status.json")
        check_page(admin, out)
    finally:
        kill_group(proc)
    step(f"files in {out}: status-page.png, status-page.html, status.json, "
         "status-page.chromium.log, demo.log")


# --- the self-test ---------------------------------------------------------------------------

SELF_TEST_PREFIXES = ("/", "/customers/contoso", "/teams/{delegate}")
SELF_TEST_STATES = ("valid", "backing_off", "on_demand")


def clean_page():
    """A page like the status page: inline styles only, which the policy allows."""
    rows = "".join(f"<tr><th scope=\"row\"><code>{p}</code></th><td class=\"ok\">{s}</td></tr>"
                   for p, s in zip(SELF_TEST_PREFIXES, ("valid", "backing off", "on_demand")))
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"refresh\" content=\"10\"><title>clean</title>"
            "<style>.ok{color:#0a6b2a}</style></head><body>"
            "<h1 style=\"font-size:1.4rem\">clean</h1>"
            f"<table><tbody>{rows}</tbody></table></body></html>")


def violating_page(image_port):
    """A page that breaks the policy twice: an inline script, an image from another port."""
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>violating</title></head><body><h1>violating</h1>"
            "<script>document.body.dataset.scriptRan = 'yes';</script>"
            f"<img alt=\"x\" src=\"http://127.0.0.1:{image_port}/pixel.png\"></body></html>")


class Server:
    """A ThreadingHTTPServer on a free 127.0.0.1 port answering GET from a dict of pages
    (path -> HTML), with the status page's headers; it counts the requests it gets."""

    def __init__(self, pages):
        self.pages, self.requests = pages, []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.requests.append(self.path)
                owner.answer(self)

            def log_message(self, format, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def answer(self, handler):
        body = self.pages.get(handler.path)
        handler.send_response(200 if body is not None else 404)
        data = (body or "not found").encode()
        handler.send_header("Content-Type", "text/html; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in EXPECTED_HEADERS.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def self_test_violating(page_server, image_server, out):
    url = f"http://127.0.0.1:{page_server.port}/violating"
    step(f"self-test: a page that breaks the policy ({url})")
    dom, console = run_chromium(url, out, "violating")
    violations = csp_violations(console)
    for v in violations:
        print(f"   detected: {v}")
    script = [v for v in violations if "inline script" in v.lower()]
    image = [v for v in violations if f"127.0.0.1:{image_server.port}/pixel.png" in v]
    problems = []
    if not script:
        problems.append("no violation reported for the inline <script>")
    if not image:
        problems.append("no violation reported for the <img> from another port")
    if image_server.requests:
        problems.append(f"the image was fetched despite the policy: {image_server.requests}")
    if "data-script-ran" in dom:
        problems.append("the inline script ran despite the policy")
    return problems


def self_test_clean(page_server, out):
    url = f"http://127.0.0.1:{page_server.port}/clean"
    step(f"self-test: a clean page with the same headers ({url})")
    code, headers, _ = get_or_fail(url)
    problems = [f"test server answered {code}"] if code != 200 else []
    problems += [f"test server: {p}" for p in header_problems(headers)]
    dom, console = run_chromium(url, out, "clean")
    report_console(console)
    problems += [f"clean page flagged: {v}" for v in csp_violations(console)]
    problems += [f"clean page lacks {m}" for m in missing_facts(dom, SELF_TEST_PREFIXES,
                                                                  SELF_TEST_STATES)]
    absent = missing_facts(dom, ("/customers/fabrikam",), ("failing",))
    step(f"self-test: facts the clean page lacks are reported: {absent}")
    if len(absent) != 2:
        problems.append(f"the DOM check missed absent facts: reported {absent}")
    return problems


def self_test(out):
    with Server({}) as image_server:
        pages = {"/violating": violating_page(image_server.port), "/clean": clean_page()}
        with Server(pages) as page_server:
            problems = self_test_violating(page_server, image_server, out)
            problems += self_test_clean(page_server, out)
    if problems:
        raise CheckFailed("self-test:\n  " + "\n  ".join(problems))


# --- main ----------------------------------------------------------------------------------


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary", nargs="?", help="the azure-costs-proxy binary")
    parser.add_argument("out", nargs="?", help="the folder for the screenshot, DOM and logs")
    parser.add_argument("--self-test", nargs="?", const="", metavar="OUT",
                        help="prove the CSP detector flags a violating page and passes a "
                             "clean one (files in OUT if given)")
    args = parser.parse_args()
    if args.self_test is None and not (args.binary and args.out):
        parser.error("give BIN and OUT, or --self-test")
    return args


def main():
    args = parse_args()
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_termination)
    signal.alarm(TOTAL_SECONDS)
    started = time.monotonic()
    try:
        step(chromium_version())
        if args.self_test is not None:
            with contextlib.ExitStack() as stack:
                out = args.self_test or stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="status-page-self-test-"))
                os.makedirs(out, exist_ok=True)
                self_test(out)
            verdict = "self-test OK: the detector flags both violations and passes the clean page"
        else:
            check(args.binary, args.out)
            verdict = "status page OK: every route and token state shown, no CSP violation"
    except CheckFailed as e:
        sys.exit(f"FAIL: {e}")
    finally:
        signal.alarm(0)
    print(f"{verdict} ({time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
