"""Docker's rules for `DELETE /images/{name}`: which references go, and whether the image does.

Pure logic; the engine carries the plan out. The rules, as dockerd's image delete:

- By reference (`busybox`, `busybox:1`, `name@digest`): that reference is removed. If the
  image keeps other references, that is all. Removing the last one of an image a container
  uses needs force.
- By ID (full or short): with at most one tag (digests of that repository aside) every
  reference goes; with several the removal needs force ("referenced in multiple
  repositories").
- The image itself goes unless a container uses it: a running one forbids removal even with
  force, a stopped one needs force.
- Then, unless `noprune`, its parents go one by one while each is left without a reference,
  a child image or a container (service.remove_image walks them).

One difference from dockerd: a forced removal of an image that stopped containers still use
leaves the image untagged ("dangling") instead of deleting it, since stowd's containers
mount their image's layers by image ID.
"""

from dataclasses import dataclass, field

from stowd.engine.errors import Conflict
from stowd.engine.images.reference import Reference


@dataclass(frozen=True)
class ImageUser:
    short_id: str
    running: bool


@dataclass
class DeletePlan:
    untag: list[Reference] = field(default_factory=list)
    delete: bool = False


def is_id_prefix(image_id: str, name: str) -> bool:
    return image_id.startswith(name) or image_id.startswith("sha256:" + name)


def is_single_reference(refs: list[Reference]) -> bool:
    """At most one tag, and digests only of that tag's repository (dockerd's rule)."""
    tags = [r for r in refs if r.digest is None]
    digests = {r.repository for r in refs if r.digest is not None}
    if len(tags) > 1 or not refs:
        return False
    repository = tags[0].repository if tags else refs[0].repository
    return digests <= {repository}


def _conflict(image_id: str, message: str, hard: bool = False) -> Conflict:
    how = "cannot be forced" if hard else "must be forced"
    return Conflict(f"conflict: unable to delete {image_id.removeprefix('sha256:')[:12]} "
                    f"({how}) - {message}")


def plan_delete(name: str, requested: Reference | None, image_id: str, refs: list[Reference],
                users: list[ImageUser], force: bool) -> DeletePlan:
    """What removing the image named `name` (parsed: requested) does; Conflict if refused.

    refs are all the image's references (tags and `name@digest`s)."""
    plan = DeletePlan()
    running = next((u for u in users if u.running), None)
    stopped = next((u for u in users if not u.running), None)
    remaining = list(refs)
    by_reference = not is_id_prefix(image_id, name)
    if by_reference:
        target = next((r for r in refs if requested is not None and r.full() == requested.full()),
                      None)
        if target is None:  # found by a short ID that is also a valid name
            by_reference = False
    if by_reference:
        assert target is not None
        if not force and is_single_reference(refs) and users:
            raise Conflict(
                f'conflict: unable to remove repository reference "{name}" (must force) - '
                f"container {users[0].short_id} is using its referenced image "
                f"{image_id.removeprefix('sha256:')[:12]}")
        plan.untag.append(target)
        remaining.remove(target)
        if target.digest is None and not any(
                r.digest is None and r.repository == target.repository for r in remaining):
            # A repository's digests go with its last tag.
            for ref in [r for r in remaining if r.repository == target.repository]:
                plan.untag.append(ref)
                remaining.remove(ref)
        if remaining:
            return plan
        # The last reference went: the image goes too unless something still needs it,
        # which then only leaves it untagged (never an error here).
        if running or (users and not force) or stopped:
            return plan
        plan.delete = True
        return plan
    if running:
        raise _conflict(image_id, f"image is being used by running container "
                                  f"{running.short_id}", hard=True)
    if not force:
        if remaining and not is_single_reference(remaining):
            raise _conflict(image_id, "image is referenced in multiple repositories")
        if stopped:
            raise _conflict(image_id, f"image is being used by stopped container "
                                      f"{stopped.short_id}")
    plan.untag.extend(remaining)
    plan.delete = not users
    return plan
