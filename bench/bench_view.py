"""`ckptkit view` at scale: a checkpoint of N tensors (100,000 by default) in Chromium.

Times the summary (every tensor's statistics, then again from the cache), the page's
size, and in Chromium (Debian's, through Playwright's Python API; nothing downloaded)
the first paint of the table (navigation start to the frame after the first rows are
drawn: `window.ckptkitReady`), a sort by a column and a filter, served and as a static
`--html` file. Not a test: nothing here asserts a time. Figures: bench/README.md.

    python bench/bench_view.py                      # 100,000 tensors
    python bench/bench_view.py --tensors 10000 --browser /usr/bin/chromium
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time

import numpy as np

import ckptkit
from ckptkit.integrations.view import data, page
from ckptkit.integrations.view.model import ViewModel
from ckptkit.integrations.view.server import make_server

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def _checkpoint(directory: str, n: int) -> str:
    rng = np.random.default_rng(0)
    values = rng.standard_normal((n, 16)).astype(np.float32)
    tensors = {f"layer_{i // 100:04d}/unit_{i % 100:02d}/kernel": values[i] for i in range(n)}
    prefix = os.path.join(directory, "many")
    ckptkit.save(prefix, tensors)
    return prefix


def _in_browser(browser_path: str, url: str, repeat: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - an optional bench dependency

    out: dict[str, list[float]] = {"first paint": [], "sort (click to drawn)": [], "filter (typed to drawn)": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, headless=True, args=ARGS)
        for _ in range(repeat):
            tab = browser.new_page(viewport={"width": 1400, "height": 900})
            tab.goto(url)
            tab.wait_for_selector("body[data-ready]", timeout=120_000)
            out["first paint"].append(tab.evaluate("window.ckptkitReady") / 1000)
            out["sort (click to drawn)"].append(tab.evaluate(
                """() => new Promise(done => { const t = performance.now();
                   document.querySelector('#head div[data-col=mean]').click();
                   requestAnimationFrame(() => done((performance.now() - t) / 1000)); })"""))
            out["filter (typed to drawn)"].append(tab.evaluate(
                """() => new Promise(done => { const f = document.getElementById('filter'), t = performance.now();
                   f.value = 'layer_00*7/*'; f.dispatchEvent(new Event('input'));
                   const wait = () => document.getElementById('count').textContent.includes(' of ')
                     ? requestAnimationFrame(() => done((performance.now() - t) / 1000)) : setTimeout(wait, 1);
                   wait(); })"""))
            tab.close()
        browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--browser", default=os.environ.get("CKPTKIT_BROWSER", "/usr/bin/chromium"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[data.CACHE_ENV] = os.path.join(tmp, "cache")
        t = time.perf_counter()
        prefix = _checkpoint(tmp, args.tensors)
        print(f"{args.tensors:,} tensors of float32[16] written in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        model = ViewModel(prefix).load()
        print(f"summary (every tensor's statistics): {time.perf_counter() - t:.2f} s")
        data._memory.clear()
        t = time.perf_counter()
        ViewModel(prefix).load()
        print(f"summary again, from the cache on disk: {time.perf_counter() - t:.2f} s")
        t = time.perf_counter()
        html = page.render(model.page(served=True))
        print(f"page rendered in {time.perf_counter() - t:.2f} s: {len(html) / 2**20:.1f} MiB")
        static = os.path.join(tmp, "static.html")
        t = time.perf_counter()
        with open(static, "w", encoding="utf-8") as f:
            f.write(page.render(model.page(served=False)))
        print(f"static page (--html) in {time.perf_counter() - t:.2f} s: {os.path.getsize(static) / 2**20:.1f} MiB")
        server = make_server(model)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            for label, url in (("served", server.url), ("static", "file://" + static)):
                for what, times in _in_browser(args.browser, url, args.repeat).items():
                    print(f"Chromium, {label}: {what}: median {statistics.median(times):.2f} s "
                          f"[{min(times):.2f} .. {max(times):.2f}]")
        finally:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    main()
