"""Makes docs/view-run.png: `ckptkit view` of a TF1 Saver directory of five steps (a
small MLP trained by gradient descent, with moving averages), its "Training run" tab in
Chromium. Needs TensorFlow, playwright and Debian's chromium (CKPTKIT_BROWSER).

    python docs/view_run_png.py
"""
from __future__ import annotations

import os
import tempfile
import threading

import numpy as np

from ckptkit.integrations.view.model import ViewModel
from ckptkit.integrations.view.server import make_server

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "view-run.png")


def _run(directory: str) -> None:
    import tensorflow as tf  # noqa: PLC0415 - only this script needs it

    tf1 = tf.compat.v1
    rng = np.random.default_rng(1)
    x = rng.standard_normal((256, 8)).astype(np.float32)
    y = (x @ rng.standard_normal((8, 1)) + 0.1 * rng.standard_normal((256, 1))).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        def dense(inputs: tf.Tensor, units: int, name: str) -> tf.Tensor:
            with tf1.variable_scope(name):
                kernel = tf1.get_variable("kernel", [inputs.shape[1], units],
                                          initializer=tf1.glorot_uniform_initializer(seed=3))
                bias = tf1.get_variable("bias", [units], initializer=tf1.zeros_initializer())
                return tf.matmul(inputs, kernel) + bias

        h = tf.nn.relu(dense(tf.constant(x), 16, "hidden"))
        out = dense(h, 1, "out")
        loss = tf.reduce_mean((out - y) ** 2)
        step = tf1.train.get_or_create_global_step()
        train = tf1.train.GradientDescentOptimizer(0.05).minimize(loss, global_step=step)
        with tf1.control_dependencies([train]):
            update = tf1.train.ExponentialMovingAverage(0.9).apply(tf1.trainable_variables())
        saver = tf1.train.Saver(max_to_keep=10, save_relative_paths=True)
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            for i in range(1, 501):
                sess.run(update)
                if i % 100 == 0:
                    saver.save(sess, os.path.join(directory, "model.ckpt"), global_step=step)


def main() -> None:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only this script needs it

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CKPTKIT_CACHE_DIR"] = os.path.join(tmp, "cache")
        run = os.path.join(tmp, "run")
        os.makedirs(run)
        _run(run)
        model = ViewModel(run).load()
        model.title = "run/  (a TF1 Saver directory: 5 checkpoints)"
        server = make_server(model)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=os.environ.get("CKPTKIT_BROWSER", "/usr/bin/chromium"),
                                        headless=True, args=["--no-sandbox", "--disable-gpu"])
            tab = browser.new_page(viewport={"width": 1100, "height": 820})
            tab.goto(server.url)
            tab.wait_for_selector("body[data-ready]")
            tab.click("#tab-run")
            tab.select_option("#run-variable", "hidden/kernel")
            tab.wait_for_selector("#moved .item")
            tab.screenshot(path=OUT)
            browser.close()
        server.shutdown()
    print(OUT)


if __name__ == "__main__":
    main()
