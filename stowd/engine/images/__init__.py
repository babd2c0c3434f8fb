"""Images: the content-addressed store and layers, load/save/import/commit, references,
and service.py (what the API may do with images)."""
