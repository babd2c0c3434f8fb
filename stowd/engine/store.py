"""SQLite state: the one source of truth.

Each record keeps its few queried columns indexed and the rest as a JSON body, the way
Podman's SQLite state does. Writes are small and committed before the API answers; WAL
mode makes them cheap and crash-safe (a kill -9 of stowd loses nothing committed).
"""

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stowd.engine.errors import Conflict

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    created REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    body TEXT NOT NULL
);
-- The build cache looks a step up among its parent's children.
CREATE INDEX IF NOT EXISTS images_by_parent ON images(json_extract(body, '$.parent'));
CREATE TABLE IF NOT EXISTS tags (
    ref TEXT PRIMARY KEY,
    image_id TEXT NOT NULL REFERENCES images(id)
);
CREATE INDEX IF NOT EXISTS tags_by_image ON tags(image_id);
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY,
    created REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS layers (
    chain_id TEXT PRIMARY KEY,
    diff_id TEXT NOT NULL,
    parent TEXT,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS networks (
    id TEXT PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    created REAL NOT NULL,
    body TEXT NOT NULL
);
"""


class NameTaken(Exception):
    def __init__(self, name: str, holder: str) -> None:
        super().__init__(name)
        self.name = name
        self.holder = holder


class Store:
    """A thin, typed wrapper over one SQLite connection.

    Calls are short (one row or one small transaction), so they run inline; a lock
    keeps the connection usable from worker threads too.
    """

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self._db.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # containers ---------------------------------------------------------------------------

    def insert_container(self, cid: str, name: str, created: float, body: dict[str, Any]) -> None:
        try:
            with self.transaction() as db:
                db.execute(
                    "INSERT INTO containers(id, name, created, body) VALUES (?, ?, ?, ?)",
                    (cid, name, created, json.dumps(body)),
                )
        except sqlite3.IntegrityError as exc:
            holder = self.container_id_by_name(name)
            if holder is None:
                raise
            raise NameTaken(name, holder) from exc

    def update_container(self, cid: str, body: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE containers SET body = ? WHERE id = ?", (json.dumps(body), cid)
            )

    def rename_container(self, cid: str, new_name: str, body: dict[str, Any]) -> None:
        try:
            with self.transaction() as db:
                db.execute(
                    "UPDATE containers SET name = ?, body = ? WHERE id = ?",
                    (new_name, json.dumps(body), cid),
                )
        except sqlite3.IntegrityError as exc:
            holder = self.container_id_by_name(new_name)
            if holder is None:
                raise
            raise NameTaken(new_name, holder) from exc

    def delete_container(self, cid: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM containers WHERE id = ?", (cid,))

    def container_id_by_name(self, name: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT id FROM containers WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def all_containers(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM containers ORDER BY created").fetchall()
        return [json.loads(r[0]) for r in rows]

    # images -------------------------------------------------------------------------------

    def put_image(self, image_id: str, created: float, body: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO images(id, created, body) VALUES (?, ?, ?)",
                (image_id, created, json.dumps(body)),
            )

    def delete_image(self, image_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM tags WHERE image_id = ?", (image_id,))
            db.execute("DELETE FROM images WHERE id = ?", (image_id,))

    def all_images(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM images ORDER BY created").fetchall()
        return [json.loads(r[0]) for r in rows]

    def child_images(self, parent_id: str) -> list[dict[str, Any]]:
        """The records of the images whose parent is parent_id, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM images WHERE json_extract(body, '$.parent') = ? "
                "ORDER BY created DESC", (parent_id,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def set_tag(self, ref: str, image_id: str) -> str | None:
        """Point ref at image_id; return the image it pointed at before, if another."""
        with self.transaction() as db:
            row = db.execute("SELECT image_id FROM tags WHERE ref = ?", (ref,)).fetchone()
            db.execute(
                "INSERT OR REPLACE INTO tags(ref, image_id) VALUES (?, ?)", (ref, image_id)
            )
        previous = row[0] if row else None
        return previous if previous != image_id else None

    def delete_tag(self, ref: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM tags WHERE ref = ?", (ref,))

    def all_tags(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._db.execute("SELECT ref, image_id FROM tags ORDER BY ref"))

    # volumes ------------------------------------------------------------------------------

    def put_volume(self, name: str, created: float, body: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO volumes(name, created, body) VALUES (?, ?, ?)",
                             (name, created, json.dumps(body)))

    def delete_volume(self, name: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM volumes WHERE name = ?", (name,))

    def all_volumes(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM volumes ORDER BY created").fetchall()
        return [json.loads(r[0]) for r in rows]

    # layers -------------------------------------------------------------------------------

    def put_layer(self, chain_id: str, diff_id: str, parent: str | None, size: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO layers(chain_id, diff_id, parent, size) VALUES (?,?,?,?)",
                (chain_id, diff_id, parent, size),
            )

    def layer(self, chain_id: str) -> tuple[str, str | None, int] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT diff_id, parent, size FROM layers WHERE chain_id = ?", (chain_id,)
            ).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def delete_layer(self, chain_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM layers WHERE chain_id = ?", (chain_id,))

    # networks -----------------------------------------------------------------------------

    def put_network(self, network_id: str, name: str, created: float,
                    body: dict[str, Any]) -> None:
        """Insert or update a network; Conflict when another one has the name."""
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO networks(id, name, created, body) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET name = excluded.name, body = excluded.body",
                    (network_id, name, created, json.dumps(body)),
                )
        except sqlite3.IntegrityError:
            raise Conflict(f"network with name {name} already exists") from None

    def delete_network(self, network_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM networks WHERE id = ?", (network_id,))

    def all_networks(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM networks ORDER BY created").fetchall()
        return [json.loads(r[0]) for r in rows]


def name_conflict(name: str, holder: str) -> Conflict:
    return Conflict(
        f'Conflict. The container name "/{name}" is already in use by container "{holder}". '
        "You have to remove (or rename) that container to be able to reuse that name."
    )
