"""The live view in headless chromium (playwright), while psycopg runs a workload through the
proxy: everything must show up on the already open page, without a reload.

Usage: live_view.py ADMIN_URL PROXY_CONNINFO CHROMIUM_PATH
Prints one line per check and exits non-zero on the first failure.
"""

import sys
import time
from urllib.parse import urlsplit

import psycopg
from playwright.sync_api import sync_playwright

admin, conninfo, chromium = sys.argv[1], sys.argv[2], sys.argv[3]
admin_origin = urlsplit(admin).netloc
# A request id an attacker controls: it must be shown as text, and nothing may run.
XSS = "<img src=x onerror=window.__xss=1>"
WAIT_S = 60
WAIT_MS = WAIT_S * 1000


def tag(request_id, route):
    return f"/*request_id='{request_id}',route='{route}'*/"


def check(label, ok, detail=""):
    if not ok:
        sys.exit(f"FAIL {label}: {detail}")
    print(f"ok {label}", flush=True)


def wait_for(page, label, js):
    """Polls the expression `js` until it is true. Not page.wait_for_function: its polling
    evaluates strings with eval(), which the page's Content-Security-Policy rightly refuses;
    page.evaluate goes through the DevTools protocol, which the policy does not govern."""
    deadline = time.monotonic() + WAIT_S
    while not page.evaluate(js):
        if time.monotonic() > deadline:
            body = page.text_content("main")
            sys.exit(f"FAIL {label}: not true after {WAIT_S} s: {js}\n--- page text ---\n{body}")
        page.wait_for_timeout(200)
    print(f"ok {label}", flush=True)


def number(page, selector):
    text = page.text_content(selector) or ""
    return int(text) if text.isdigit() else -1


with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path=chromium,
        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    )
    page = browser.new_page()
    requests, problems, navigations = [], [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

    def console(message):
        # CSP and Trusted Types violations are reported on the console.
        text = message.text
        if message.type == "error" and (
            "Content Security Policy" in text or "Trusted Type" in text or "Refused" in text
        ):
            problems.append(f"console: {text}")

    page.on("console", console)
    page.on(
        "framenavigated",
        lambda frame: navigations.append(frame.url) if frame == page.main_frame else None,
    )

    page.goto(admin)
    wait_for(page, "the page loads its data", "document.getElementById('status').textContent.startsWith('updated')")
    page.evaluate("window.__marker = 'same page'")
    queries_before = number(page, "#cov-queries")
    check("coverage is shown", queries_before >= 0, page.text_content("#coverage"))
    check("no findings yet", page.locator("li.finding").count() == 0)

    with psycopg.connect(conninfo, autocommit=True) as conn:
        # The first statement in a database makes the proxy load its catalog.
        conn.execute(f"SELECT id FROM events WHERE id = %s {tag('warm-up', 'warm-up')}", (1,)).fetchone()
        wait_for(page, "the catalog is loaded", "document.getElementById('cov-catalog').textContent === 'available'")
        # An N+1: one author lookup per post, in one request whose id holds markup.
        t = tag(XSS, "posts#index")
        posts = conn.execute(f"SELECT id, author_id FROM posts ORDER BY id LIMIT 6 {t}").fetchall()
        for _, author in posts:
            conn.execute(f"SELECT name FROM authors WHERE id = %s {t}", (author,)).fetchone()
        # An unbounded SELECT: every post, no LIMIT.
        rows = conn.execute(f"SELECT id, title FROM posts {tag('r-list', 'posts#list')}").fetchall()
        check("the workload ran", len(posts) == 6 and len(rows) == 300)
        # An unindexed filter on a large table (hypopg is in the database).
        conn.execute(f"SELECT id FROM events WHERE kind = %s {tag('r-events', 'events#index')}", ("kind3",)).fetchall()

    wait_for(page, "the N+1 appears", "document.querySelector(\"li.finding[data-kind='n_plus_one']\") !== null")
    wait_for(page, "the unbounded SELECT appears", "document.querySelector(\"li.finding[data-kind='unbounded_select']\") !== null")
    wait_for(page, "the coverage numbers move", f"Number(document.getElementById('cov-queries').textContent) >= {queries_before + 10}")
    check("no reload", page.evaluate("window.__marker") == "same page" and len(navigations) == 1, navigations)

    # The kind filter hides the others.
    page.select_option("#filter-kind", "n_plus_one")
    kinds = page.eval_on_selector_all("li.finding", "els => els.filter(e => !e.hidden).map(e => e.dataset.kind)")
    check("the kind filter shows only N+1s", kinds and set(kinds) == {"n_plus_one"}, kinds)
    check("the kind filter hides the unbounded SELECT", page.is_hidden("li.finding[data-kind='unbounded_select']"))
    page.select_option("#filter-kind", "")
    check("clearing the filter shows it again", page.is_visible("li.finding[data-kind='unbounded_select']"))
    routes = page.eval_on_selector_all("#filter-route option", "os => os.map(o => o.textContent)")
    # Unbounded SELECTs are judged per statement, with no request: "(no route)".
    check("the route filter offers the routes", "posts#index" in routes and "(no route)" in routes, routes)
    page.select_option("#filter-route", "r:posts#index")
    kinds = page.eval_on_selector_all("li.finding", "els => els.filter(e => !e.hidden).map(e => e.dataset.kind)")
    check("the route filter shows only that route's findings", kinds == ["n_plus_one"], kinds)
    page.select_option("#filter-route", "")
    page.select_option("#filter-severity", "info")
    severities = page.eval_on_selector_all("li.finding", "els => els.filter(e => !e.hidden).map(e => e.dataset.severity)")
    check("the severity filter shows only that severity", severities and set(severities) == {"info"}, severities)
    page.select_option("#filter-severity", "")

    # Expanding shows the suggestion, the parent, and the request id as plain text.
    n1 = page.locator("li.finding[data-kind='n_plus_one']").first
    suggestion = n1.locator(".suggestion")
    check("the suggestion is folded away at first", not suggestion.is_visible())
    n1.locator("summary").click()
    suggestion.wait_for(state="visible", timeout=WAIT_MS)
    check("expanding shows the suggestion", len(suggestion.text_content().strip()) > 20, suggestion.text_content())
    check("the parent query is shown", "FROM posts" in n1.locator(".parent").text_content())
    check("the query is normalized SQL", "$1" in n1.locator(".query").text_content(), n1.locator(".query").text_content())
    check("the request id is shown as text", n1.locator(".request-id").text_content() == XSS, n1.locator(".request-id").text_content())
    check("no element was made of it", page.evaluate("document.querySelectorAll('img').length") == 0)
    check("no script ran", page.evaluate("typeof window.__xss") == "undefined")
    page.wait_for_timeout(2500)
    check("the finding stays expanded across updates", suggestion.is_visible())

    # The unindexed filter, with hypopg's verdict on the suggested index.
    wait_for(
        page,
        "the hypopg verdict arrives",
        "Array.from(document.querySelectorAll(\"li.finding[data-kind='unindexed_filter'] .hypopg\"))"
        ".some(e => e.textContent.startsWith('verified with hypopg'))",
    )
    unindexed = page.locator("li.finding[data-kind='unindexed_filter']").first
    unindexed.locator("summary").click()
    check("expanding shows the index suggestion", "CREATE INDEX" in unindexed.locator(".suggestion").text_content())
    check("and the verdict", unindexed.locator(".hypopg").is_visible())

    wait_for(
        page,
        "the author lookup is among the top fingerprints",
        "Array.from(document.querySelectorAll('#fingerprint-rows tr')).some(tr =>"
        " tr.querySelector('.sql').textContent.includes('FROM authors')"
        " && Number(tr.querySelector('.calls').textContent) === 6)",
    )
    wait_for(
        page,
        "posts#index ran 7 statements per request",
        "Array.from(document.querySelectorAll('#route-rows tr')).some(tr =>"
        " tr.querySelector('.route').textContent === 'posts#index'"
        " && tr.querySelector('.requests').textContent === '1'"
        " && tr.querySelector('.median').textContent === '7'"
        " && tr.querySelector('.max').textContent === '7')",
    )

    elsewhere = [u for u in requests if urlsplit(u).netloc != admin_origin]
    check("no request leaves the admin port", not elsewhere, elsewhere)
    check("the page polled the data endpoint", sum("/api/live" in u for u in requests) >= 3, len(requests))
    check("no script error or policy violation", not problems, problems)
    browser.close()

print("live view: all checks passed")
