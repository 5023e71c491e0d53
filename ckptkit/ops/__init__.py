"""The operations layer: what the commands do to whole checkpoints (see ARCHITECTURE.md)."""
