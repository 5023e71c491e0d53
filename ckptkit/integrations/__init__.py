"""ckptkit inside other engines: framework tensors (torch, jax) from checkpoint bytes.

Each module imports its engine lazily, inside the functions that need it, so that
`import ckptkit` never pays for torch or jax. `frameworks` sits beside the reading layer
(a reader hands out framework tensors); engines that drive whole checkpoints build on the
layers below them.
"""
