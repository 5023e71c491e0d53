"""Operations on whole checkpoints: `save`, the edits (rename, rm, ema swap, compact),
convert, merge, average, statistics, and what the commands report (`info`).

Each is a library function the CLI calls (the CLI only parses and renders). May import
every layer below: `tf1/`, `tf2/`, the reading layer, `formats/`, `storage/`, the facts.
"""
