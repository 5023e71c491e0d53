"""Generated protobuf modules (TF-wire-compatible), registered in a private pool.

Do not edit the *_pb2 files: change proto/*.proto and run `python proto/generate.py`.
"""
