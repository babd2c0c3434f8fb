"""The engine's core: per-container handles, the one SQLite writer, tasks, events, layout.

Everything above it (containers/, images/, network/, volumes/) shares state only through
these objects; the core imports nothing from them.
"""
