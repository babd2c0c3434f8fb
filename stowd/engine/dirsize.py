"""The one directory size: what `docker system df`, container sizes and volume prune report.

dockerd sizes a directory as the sum of the sizes of what is in it that is not a directory,
each inode counted once (hard links), symlinks by their own size (moby pkg/directory).
Blocking: call from a thread.
"""

import os
from pathlib import Path


def dir_size(path: Path | str) -> int:
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [os.fspath(path)]
    while stack:
        current = stack.pop()
        try:
            it = os.scandir(current)
        except OSError:
            continue
        with it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                if st.st_size == 0:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
                total += st.st_size
    return total
