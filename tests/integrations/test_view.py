"""`ckptkit view`: the numbers it shows (against numpy over TF's own reads of TF-written
checkpoints), the server (only its fixed routes), the static page (self-contained), and,
marked `browser`, the page itself driven in Chromium through Playwright."""
from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading

import fsspec
import numpy as np
import pytest
from helpers import BROWSER, copy_dir, subprocess_env

import ckptkit
from ckptkit.integrations.view import data, page
from ckptkit.integrations.view.model import ViewModel
from ckptkit.integrations.view.server import make_server
from ckptkit.reader import CheckpointReader

HOSTILE = ["<script>window.__pwned = 1</script>", '<img src=x onerror="window.__pwned = 2">',
           "x</script><!--<script>window.__pwned = 3</script>", "plain"]
STEPS = (100, 200, 300)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test keeps its summaries apart (and out of ~/.cache)."""
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(data, "_memory", {})


# --------------------------------------------------------------------------- TF-written checkpoints

@pytest.fixture(scope="session")
def run_dir(tf, tf1, tmp_path_factory) -> str:
    """A TF1 Saver directory of three steps: a matrix, a bias and their EMA shadows."""
    directory = tmp_path_factory.mktemp("run")
    graph = tf.Graph()
    with graph.as_default():
        w = tf1.get_variable("dense/kernel", initializer=np.linspace(-1, 1, 48, dtype=np.float32).reshape(8, 6))
        b = tf1.get_variable("dense/bias", initializer=np.zeros(6, np.float32))
        step = tf1.train.get_or_create_global_step()
        ema = tf1.train.ExponentialMovingAverage(0.5)
        with tf1.control_dependencies([w.assign(w * 1.5 + 0.25), b.assign_add(tf.ones([6]) * 0.1),
                                       step.assign_add(100)]):
            train = ema.apply([w, b])
        saver = tf1.train.Saver(max_to_keep=5, save_relative_paths=True)
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            for at in STEPS:
                sess.run(train)
                saver.save(sess, os.path.join(directory, "model.ckpt"), global_step=at)
    return os.fspath(directory)


@pytest.fixture(scope="session")
def keras_dir(tf, tmp_path_factory) -> str:
    """A TF2 object-based checkpoint of a Keras model and its optimizer (after a step)."""
    directory = tmp_path_factory.mktemp("keras")
    model = tf.keras.Sequential([tf.keras.Input((5,)), tf.keras.layers.Dense(7, name="hidden"),
                                 tf.keras.layers.Dense(3, name="out")])
    optimizer = tf.keras.optimizers.Adam(0.01)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(tf.ones([2, 5])) ** 2)
    variables = model.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
    tf.train.Checkpoint(model=model, optimizer=optimizer).write(os.path.join(directory, "ckpt"))
    return os.fspath(directory)


@pytest.fixture(scope="session")
def hostile_dir(tf, tmp_path_factory) -> str:
    """Tensor names holding markup, written by TF's own SaveV2 op."""
    directory = tmp_path_factory.mktemp("hostile")
    tf.raw_ops.SaveV2(prefix=os.path.join(directory, "ckpt"), tensor_names=HOSTILE, shape_and_slices=[""] * 4,
                      tensors=[tf.constant(np.arange(6, dtype=np.float32).reshape(2, 3) + i) for i in range(4)])
    return os.fspath(directory)


def latest(run: str) -> str:
    return os.path.join(run, f"model.ckpt-{STEPS[-1]}")


@pytest.fixture
def damaged(run_dir, tmp_path) -> str:
    """A copy of the run's latest checkpoint with one byte of dense/kernel's data flipped."""
    prefix = latest(copy_dir(run_dir, tmp_path / "damaged"))
    with CheckpointReader(prefix) as reader:
        entry = reader.entry("dense/kernel")
    with open(f"{prefix}.data-{entry.shard_id:05d}-of-00001", "r+b") as f:
        f.seek(entry.offset + 5)
        byte = f.read(1)
        f.seek(entry.offset + 5)
        f.write(bytes([byte[0] ^ 0x40]))
    return prefix


# --------------------------------------------------------------------------- the numbers

def _expected(values: np.ndarray) -> dict:
    wide = np.asarray(values).astype(np.float64).reshape(-1)
    finite = wide[np.isfinite(wide)]
    return {"min": finite.min(), "max": finite.max(), "mean": finite.mean(), "std": finite.std(),
            "nan": int(np.isnan(wide).sum()), "inf": int(np.isinf(wide).sum()),
            "norm": np.linalg.norm(finite), "maxabs": np.abs(finite).max()}


def test_rows_equal_numpy_over_tf_reads(tf, dtypes_ckpt):
    """Every float and int tensor's row equals numpy's statistics of the values TF reads."""
    summary = data.checkpoint_summary(dtypes_ckpt)
    rows = {r["name"]: r for r in summary["tensors"]}
    checked = 0
    for name, _ in tf.train.list_variables(dtypes_ckpt):
        value = tf.train.load_variable(dtypes_ckpt, name)
        row = rows[name]
        assert row["dtype"] and list(row["shape"]) == list(np.shape(value)) and row["elements"] == np.size(value)
        if value.dtype.kind not in "fiu" or not np.isfinite(np.asarray(value, np.float64)).any():
            continue
        for key, want in _expected(value).items():
            if key in ("nan", "inf") and value.dtype.kind != "f":
                assert row[key] is None
                continue
            assert math.isclose(row[key], want, rel_tol=1e-9, abs_tol=1e-12), (name, key, row[key], want)
        checked += 1
    assert checked >= 6
    assert rows["dense/bias"]["nan"] == 1 and rows["dense/bias"]["inf"] == 1
    assert rows["flags"]["mean"] == pytest.approx(2 / 3) and rows["flags"]["norm"] == pytest.approx(math.sqrt(2))
    assert all(r["damaged"] is None for r in summary["tensors"])


def test_npz_and_url_checkpoints(tmp_path):
    """Any format and any store: an .npz numpy wrote; a checkpoint at a memory:// URL
    (summarized in memory only: nothing kept on disk for it)."""
    values = {"a": np.linspace(-2, 3, 20).reshape(4, 5), "b": np.array([1, 5, -7], np.int32)}
    np.savez(tmp_path / "w.npz", **values)
    rows = {r["name"]: r for r in data.checkpoint_summary(str(tmp_path / "w.npz"))["tensors"]}
    for name, value in values.items():
        for key, want in _expected(value).items():
            if key not in ("nan", "inf") or value.dtype.kind == "f":
                assert math.isclose(rows[name][key], want, rel_tol=1e-12), (name, key)
    fsspec.filesystem("memory").pipe("/view-test/w.npz", (tmp_path / "w.npz").read_bytes())
    before = os.listdir(tmp_path / "cache")
    remote = data.checkpoint_summary("memory://view-test/w.npz")
    assert [r["mean"] for r in remote["tensors"]] == [rows[n]["mean"] for n in ("a", "b")]
    assert os.listdir(tmp_path / "cache") == before
    with serving("memory://view-test/w.npz") as server:
        assert json.loads(_get(server, "/api/tensor?i=0")[1])["heatmap"]["rows"] == 4


def test_summary_is_computed_once_per_identity(run_dir, tmp_path, monkeypatch):
    prefix = latest(copy_dir(run_dir, tmp_path / "run"))
    first = data.checkpoint_summary(prefix)
    assert os.listdir(tmp_path / "cache")
    monkeypatch.setattr(data, "_memory", {})  # a new process: the summary comes from disk, nothing is read

    def no_reading(*args, **kwargs):
        raise AssertionError("statistics recomputed for an unchanged checkpoint")

    stream_stats = data._stats.stream_stats
    monkeypatch.setattr(data._stats, "stream_stats", no_reading)
    assert data.checkpoint_summary(prefix) == first
    assert data.pending_bytes([prefix]) == 0
    monkeypatch.setattr(data._stats, "stream_stats", stream_stats)
    ckptkit.save(prefix, {"dense/kernel": np.full((2, 2), 3.0, np.float32)})  # another identity
    again = data.checkpoint_summary(prefix)
    assert [r["name"] for r in again["tensors"]] == ["dense/kernel"] and again["tensors"][0]["mean"] == 3.0


def test_cache_keeps_the_last_used(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "CACHE_KEEP", 2)
    prefixes = [ckptkit.save(str(tmp_path / f"c{i}"), {"x": np.full(3, float(i), np.float32)}) for i in range(3)]
    for prefix in prefixes:
        data.checkpoint_summary(prefix)
    cache = tmp_path / "cache"
    assert len(list(cache.glob("*.json"))) == 2 and not list(cache.glob("*.tmp"))
    assert (cache.stat().st_mode & 0o777) == 0o700
    monkeypatch.setattr(data, "_memory", {})
    assert data.pending_bytes(prefixes) == 12  # the first one was pruned: only it is read again


def test_histogram_and_heat_map_equal_numpy(tf, run_dir, tmp_path):
    big = np.random.default_rng(5).standard_normal((130, 70)).astype(np.float32)
    big[3, 4] = np.nan
    prefix = str(tmp_path / "big")
    ckptkit.save(prefix, {"big": big})
    for path, name in ((latest(run_dir), "dense/kernel"), (prefix, "big")):
        value = tf.train.load_variable(path, name).astype(np.float64)
        row = next(r for r in data.checkpoint_summary(path)["tensors"] if r["name"] == name)
        with CheckpointReader(path) as reader:
            detail = data.tensor_detail(reader, row)
        finite = value[np.isfinite(value)]
        counts, edges = np.histogram(finite, bins=data.HIST_BINS, range=(finite.min(), finite.max()))
        assert detail["histogram"]["counts"] == counts.tolist()
        assert np.allclose(detail["histogram"]["edges"], edges)
        heat = detail["heatmap"]
        br, bc = heat["block"]
        assert (br, bc) == (math.ceil(value.shape[0] / 64), math.ceil(value.shape[1] / 64))
        cells = np.array([np.nan if v is None else v for v in heat["values"]]).reshape(heat["rows"], heat["cols"])
        for i in range(heat["rows"]):
            for j in range(heat["cols"]):
                block = value[i * br:(i + 1) * br, j * bc:(j + 1) * bc]
                assert math.isclose(cells[i, j], np.nanmean(block), rel_tol=1e-9, abs_tol=1e-12)


def test_run_series_across_saver_steps(tf, run_dir):
    paths = data.run_checkpoints(run_dir)
    assert [data.step_of(p) for p in paths] == list(STEPS)
    assert data.run_checkpoints(latest(run_dir)) is None  # one checkpoint is not a run
    model = ViewModel(run_dir).load()
    assert model.is_run
    run = model.page(served=True)["run"]
    assert [c["step"] for c in run["checkpoints"]] == list(STEPS)
    for name in ("dense/kernel", "dense/bias", "dense/kernel/ExponentialMovingAverage", "global_step"):
        values = [tf.train.load_variable(p, name) for p in paths]
        for key in ("norm", "mean", "std", "maxabs"):
            want = [_expected(v)[key] for v in values]
            assert np.allclose(run["series"][name][key], want, rtol=1e-9), (name, key)
    assert model.summary["ema"]["dense/kernel"] == "dense/kernel/ExponentialMovingAverage"


def test_what_moved_is_relative_change_largest_first(tf, run_dir):
    first, last = data.run_checkpoints(run_dir)[0], data.run_checkpoints(run_dir)[-1]
    moved = data.relative_change(first, last)
    changes = [m["change"] for m in moved if m["change"] is not None]
    assert changes == sorted(changes, reverse=True)
    for m in moved:
        a = tf.train.load_variable(first, m["name"]).astype(np.float64)
        b = tf.train.load_variable(last, m["name"]).astype(np.float64)
        if np.linalg.norm(a):
            assert math.isclose(m["change"], np.linalg.norm(b - a) / np.linalg.norm(a), rel_tol=1e-9), m
        else:
            assert m["change"] is None and m["diff_norm"] > 0  # the bias started at zero
    assert {m["name"] for m in moved} >= {"dense/kernel", "dense/bias", "global_step"}


def test_damaged_tensor_is_marked_not_fatal(damaged):
    summary = data.checkpoint_summary(damaged)
    rows = {r["name"]: r for r in summary["tensors"]}
    assert rows["dense/kernel"]["damaged"] and rows["dense/kernel"]["mean"] is None
    assert "dense/kernel" in rows["dense/kernel"]["damaged"] or "checksum" in rows["dense/kernel"]["damaged"]
    assert all(r["damaged"] is None and r["mean"] is not None for n, r in rows.items() if n != "dense/kernel")
    with CheckpointReader(damaged) as reader:
        assert data.tensor_detail(reader, rows["dense/kernel"])["damaged"]


# --------------------------------------------------------------------------- the page and the server

def _embedded(html: str) -> dict:
    found = re.search(r'<script id="ckptkit-data" type="application/json">(.*?)</script>', html, re.S)
    assert found
    return json.loads(found.group(1))


def test_embedded_json_cannot_end_its_script(hostile_dir):
    html = page.render(ViewModel(hostile_dir).load().page(served=False))
    body = html[html.index('type="application/json">'):]
    body = body[:body.index("</script>")]
    assert "<" not in body and "<!--" not in body and ">" not in body[len('type="application/json">'):]
    names = [r["name"] for r in _embedded(html)["checkpoint"]["tensors"]]
    assert sorted(names) == sorted(HOSTILE)


@contextlib.contextmanager
def serving(path: str):
    server = make_server(ViewModel(path).load())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _get(server, path: str, host: str | None = None, method: str = "GET") -> tuple[int, bytes, dict]:
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    conn.putrequest(method, path, skip_host=True)
    conn.putheader("Host", host or f"127.0.0.1:{server.server_address[1]}")
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body, dict(response.getheaders())


def test_server_answers_only_its_routes(run_dir):
    with serving(run_dir) as server:
        assert server.server_address[0] == "127.0.0.1"
        status, body, headers = _get(server, "/")
        assert status == 200 and headers["Content-Type"].startswith("text/html") and b"ckptkit-data" in body
        assert headers["X-Content-Type-Options"] == "nosniff"
        status, body, _ = _get(server, "/api/model")
        assert status == 200 and json.loads(body)["run"]["checkpoints"][-1]["step"] == STEPS[-1]
        status, body, _ = _get(server, "/api/tensor?i=0")
        assert status == 200 and json.loads(body)["name"] == json.loads(_get(server, "/api/model")[1])[
            "checkpoint"]["tensors"][0]["name"]
        assert _get(server, "/api/moved?a=0&b=2")[0] == 200
        for path in ("/../../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "//etc/passwd", "/page.html",
                     "/api/tensor?i=99999", "/api/tensor?i=-1", "/api/tensor?i=1e3", "/api/tensor",
                     "/api/tensor?i=0&i=1", "/api/moved?a=0&b=3", "/api/model/../../x", "/index.html",
                     "/" + os.path.join(run_dir, "checkpoint"), "/api/tensor?i=" + "9" * 40):
            assert _get(server, path)[0] == 404, path
        assert _get(server, "/", host="evil.example:80")[0] == 403  # a rebound DNS name
        assert _get(server, "/", method="POST")[0] == 501
        assert _get(server, "/", method="HEAD")[1] == b""


def test_cli_html_is_one_self_contained_file(run_dir, tmp_path):
    out = tmp_path / "page.html"
    env = {**subprocess_env(), data.CACHE_ENV: str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "ckptkit.cli", "view", run_dir, "--html", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    html = out.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert not re.search(r"<(link|iframe|object|embed)\b|<script[^>]*\bsrc\s*=|@import|url\(", html, re.I)
    model = _embedded(html)
    assert model["served"] is False and len(model["run"]["checkpoints"]) == 3 and model["moved"]["0,2"]
    assert model["details"]  # histograms embedded
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 1 and "--overwrite" in again.stderr and "Traceback" not in again.stderr
    assert subprocess.run([*cmd, "--overwrite"], capture_output=True, env=env, timeout=300).returncode == 0


def test_cli_serves_prints_url_first_and_stops_on_ctrl_c(run_dir, tmp_path):
    env = {**subprocess_env(), data.CACHE_ENV: str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "ckptkit.cli", "view", latest(run_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url), url
        conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1].strip("/")), timeout=30)
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cli_bad_path_or_busy_port_is_one_line(run_dir, tmp_path):
    env = {**subprocess_env(), data.CACHE_ENV: str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-m", "ckptkit.cli", "view", str(tmp_path / "missing")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1 and result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = subprocess.run([sys.executable, "-m", "ckptkit.cli", "view", latest(run_dir), "--port",
                                 str(busy.getsockname()[1])], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1 and result.stdout == "" and "cannot serve on 127.0.0.1:" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_saved_model_directory(tf, tmp_path):
    """A SavedModel directory opens its variables, as every command does."""
    module = tf.Module()
    module.w = tf.Variable(np.arange(12, dtype=np.float32).reshape(3, 4))
    module.f = tf.function(lambda x: x @ module.w, input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "sm"))
    model = ViewModel(str(tmp_path / "sm")).load()
    assert not model.is_run and model.summary["prefix"].endswith(os.path.join("variables", "variables"))
    row = next(r for r in model.summary["tensors"] if r["name"].startswith("w/"))
    assert row["mean"] == 5.5 and row["friendly"] == "w" and model.summary["tree"] is not None


# --------------------------------------------------------------------------- in the browser

@pytest.fixture(scope="session")
def chromium():
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only the browser tests need it

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=BROWSER, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield browser
        browser.close()


@pytest.fixture
def open_page(chromium):
    """Opens a URL in a fresh page; fails the test on any script error on the page."""
    pages, errors = [], []

    def opener(url: str):
        tab = chromium.new_page(viewport={"width": 1400, "height": 900})
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.on("dialog", lambda d: (errors.append("dialog: " + d.message), d.dismiss()))
        tab.goto(url)
        tab.wait_for_selector("body[data-ready]")
        pages.append(tab)
        return tab

    yield opener
    for tab in pages:
        tab.close()
    assert errors == []


def _names(tab) -> list[str]:
    return tab.eval_on_selector_all(".row:not([hidden]) div[data-col=name]",
                                    "cells => cells.map(c => c.firstChild ? c.firstChild.textContent : '')")


@pytest.mark.browser
def test_table_sorts_filters_and_draws_a_histogram(keras_dir, open_page, tmp_path):
    model = ViewModel(keras_dir).load()
    with serving(keras_dir) as server:
        tab = open_page(server.url)
        rows = model.summary["tensors"]
        assert sorted(_names(tab)) == sorted(r["name"] for r in rows)
        tab.click("#head div[data-col=elements]")  # numbers sort largest first
        assert _names(tab)[0] == max(rows, key=lambda r: (r["elements"], -rows.index(r)))["name"]
        tab.click("#head div[data-col=elements]")
        assert _names(tab)[0] in [r["name"] for r in rows if r["elements"] == min(x["elements"] for x in rows)]
        kernels = [r["name"] for r in rows if (r["friendly"] or "").endswith("kernel")]  # Keras 3: `_kernel`
        assert len(kernels) == 2 and not any("kernel" in k for k in kernels)
        tab.fill("#filter", "*kernel")  # a glob matches the key or its friendly name
        tab.wait_for_function("document.querySelectorAll('.row:not([hidden])').length === 2")
        assert sorted(_names(tab)) == sorted(kernels)
        tab.click(f".row:not([hidden]) >> text={kernels[0]}")
        tab.wait_for_selector("#detail svg.histogram rect")
        heights = tab.eval_on_selector_all("#detail svg.histogram rect", "rs => rs.map(r => +r.getAttribute('height'))")
        assert len(heights) == data.HIST_BINS and sum(h > 0 for h in heights) >= 2
        assert tab.eval_on_selector("#detail canvas.heatmap", "c => c.width > 0 && c.height > 0")
        tab.screenshot(path=str(tmp_path / "table.png"))
        tab.click("#tab-tree")
        tree = tab.text_content("#tree")
        assert "model" in tree and "optimizer" in tree
        tab.screenshot(path=str(tmp_path / "tree.png"))


@contextlib.contextmanager
def page_url(path: str, served: bool, tmp_path):
    """The URL of `ckptkit view PATH`: served on loopback, or its `--html` file."""
    if served:
        with serving(path) as server:
            yield server.url
        return
    out = tmp_path / "page.html"
    out.write_text(page.render(ViewModel(path).load().page(served=False)), encoding="utf-8")
    yield out.as_uri()


@pytest.mark.browser
@pytest.mark.parametrize("served", [True, False], ids=["served", "static"])
def test_training_run_plots(run_dir, open_page, tmp_path, served):
    paths = data.run_checkpoints(run_dir)
    with page_url(run_dir, served, tmp_path) as url:
        tab = open_page(url)
        tab.click("#tab-run")
        tab.select_option("#run-variable", "dense/kernel")
        points = tab.eval_on_selector_all("#run-plots polyline:not(.shadow)",
                                          "ps => ps.map(p => p.getAttribute('points'))")
        assert len(points) == 4 and all(len(p.split()) == len(STEPS) for p in points)
        shadows = tab.eval_on_selector_all("#run-plots polyline.shadow", "ps => ps.map(p => p.getAttribute('points'))")
        assert len(shadows) == 4 and all(len(p.split()) == len(STEPS) for p in shadows)  # its EMA beside it
        for a, b in ((0, 2), (1, 2)):
            tab.select_option("#moved-a", str(a))
            tab.select_option("#moved-b", str(b))
            tab.click("#moved-go")
            tab.wait_for_selector("#moved .item")
            labels = tab.eval_on_selector_all("#moved .item .label", "ls => ls.map(l => l.textContent)")
            assert labels == [m["name"] for m in data.relative_change(paths[a], paths[b])]
        tab.screenshot(path=str(tmp_path / "run.png"), full_page=True)


@pytest.mark.browser
@pytest.mark.parametrize("served", [True, False], ids=["served", "static"])
def test_hostile_names_are_text(hostile_dir, open_page, tmp_path, served):
    with page_url(hostile_dir, served, tmp_path) as url:
        tab = open_page(url)
        assert sorted(_names(tab)) == sorted(HOSTILE)
        for i in range(len(HOSTILE)):
            tab.click(f".row >> nth={i}")
            tab.wait_for_selector("#detail .name")
            assert tab.text_content("#detail .name") in HOSTILE
        assert tab.evaluate("window.__pwned") is None
        assert tab.eval_on_selector_all("main img, main script", "e => e.length") == 0
        tab.screenshot(path=str(tmp_path / "hostile.png"))


@pytest.mark.browser
def test_damaged_tensor_shows_as_damaged(damaged, open_page, tmp_path):
    with serving(damaged) as server:
        tab = open_page(server.url)
        row = tab.locator(".row", has_text="dense/kernel").first
        assert "damaged" in row.get_attribute("class") and "damaged" in row.text_content()
        row.click()
        tab.wait_for_selector("#detail .damagedmsg")
        ok = tab.locator(".row", has_text="dense/bias").first
        assert "damaged" not in ok.get_attribute("class")
        tab.screenshot(path=str(tmp_path / "damaged.png"))
