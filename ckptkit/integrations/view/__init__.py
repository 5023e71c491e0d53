"""`ckptkit view`: a checkpoint, or a training run's checkpoints, as one web page.

data computes what the page shows (per-tensor statistics through the streaming `stats`
code, cached by the checkpoint's identity; histograms and heat maps; a run's series and
what moved between two checkpoints); page fills the one self-contained HTML template
(page.html: hand-written script and style inline, no network); server serves it on
loopback with a fixed set of JSON endpoints.
"""
