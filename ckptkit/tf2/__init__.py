"""TF2 semantics: `Checkpoint`, `CheckpointManager`, and edits that keep a checkpoint's
object graph consistent with its tensors.

Reading the object graph a checkpoint stores is a format (`formats/objectgraph.py`); this
layer builds and changes it. May import the reading layer, `tf1/` (the state file's
management), `formats/`, `storage/` and the facts; never `ops/`, `integrations/` or `cli/`.
"""
