"""A helper module next to a handler, imported by plain name."""


def shout(data: bytes) -> bytes:
    return data.upper() + b"!"
