"""The engine: core/ (shared state), containers/ (one verb a module), images/, network/,
volumes, distribution/, and engine.py (the wiring). docs/design.md draws who imports whom."""
