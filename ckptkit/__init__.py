"""ckptkit: TensorFlow checkpoints in plain Python (numpy + protobuf), no TensorFlow needed."""
