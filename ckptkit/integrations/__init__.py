"""ckptkit inside other engines: framework tensors (torch, jax) from checkpoint bytes, and
checkpoints as web pages (`ckptkit view`).

Each module imports its engine lazily, inside the functions that need it, so that
`import ckptkit` never pays for torch or jax. `frameworks` sits beside the reading layer
(a reader hands out framework tensors); engines that drive whole checkpoints build on the
layers below them: `view/` (the page, its numbers and its loopback server) on the
operations.
"""
