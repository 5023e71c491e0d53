"""TF1 semantics: the Saver, checkpoint management on the `checkpoint` state file, `.meta`
graphs (MetaGraphDef, SavedModel signatures and functions), ExponentialMovingAverage and
`checkpoints_iterator`.

Owns what TF's `tf.compat.v1.train` offers around a checkpoint. May import the reading layer
(`reader`, `location`), `formats/`, `storage/` and the facts (`errors`, `dtypes`, `proto`);
never `tf2/`, `ops/`, `integrations/` or `cli/`.
"""
