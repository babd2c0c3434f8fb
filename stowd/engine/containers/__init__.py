"""Containers: one verb a module (create, start, monitor, stop, delete, update, attach, exec,
inspect_fs, commit, stats, top), sharing state only through the core's handles.

service.py is what the API may call; context.py is what every verb is given.
"""
