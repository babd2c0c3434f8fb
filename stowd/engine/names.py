"""Container IDs and names: generation, validation and Docker's name rule."""

import re
import secrets

from stowd.engine.errors import InvalidParameter

NAME_PATTERN = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")

_ADJECTIVES = (
    "agile amazing bold brave bright calm clever cool crisp curious daring eager elegant epic "
    "fervent festive fond friendly gentle happy hardy jolly keen kind lively loving lucid merry "
    "modest nifty noble patient peaceful plucky proud quick quiet relaxed sharp silly sleepy "
    "stoic sunny swift tender upbeat vibrant vigilant wizardly witty youthful zealous"
).split()

_SURNAMES = (
    "agnesi albattani babbage banach bardeen bohr boole carson cerf chandrasekhar curie darwin "
    "dijkstra einstein euclid euler faraday fermat fermi feynman franklin galileo gauss "
    "goldberg hamilton hawking hopper hypatia johnson kepler knuth lamarr leakey lovelace "
    "maxwell mayer meitner mendel newton noether pascal pasteur perlman planck ramanujan "
    "ritchie shannon stallman tesla thompson torvalds turing volta wiles wozniak"
).split()


def new_id() -> str:
    """64 hex digits; never all digits in the short form, since short IDs serve as hostnames."""
    while True:
        candidate = secrets.token_hex(32)
        if not candidate[:12].isdigit():
            return candidate


def random_name(attempt: int = 0) -> str:
    name = f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_SURNAMES)}"
    if attempt:
        name += str(secrets.randbelow(10))
    return name


def validate_name(name: str) -> str:
    """Return the name without its leading slash, or raise Docker's 400."""
    if not NAME_PATTERN.match(name):
        raise InvalidParameter(
            f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )
    return name.lstrip("/")
