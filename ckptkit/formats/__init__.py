"""The bytes of each on-disk format, one module per format, behind one registry table
(`registry.FORMATS`): V2 bundles (`bundle_index`, `bundle`, `v2`), the SSTable (`table`),
V1 tables (`v1`), partitioned-variable slices (`slices`), `.npz`, `.safetensors`, Keras
HDF5 files (`keras`), the `checkpoint` state file (`state_file`), the TF2 object graph a
checkpoint stores (`objectgraph`), and every file-name rule (`naming`).

May import `storage/` and the facts (`errors`, `dtypes`, `proto`, `selection`) only.
"""
