"""The errors a user can fix, and how the add-on words them."""


class ExportError(Exception):
    """The scene cannot be exported as it is; the message is one clear line."""


class InputError(Exception):
    """A setting or a file the user chose cannot be used; the message is one clear line."""


def sentence(text: str) -> str:
    """The backend's and protocol's lines start lower-case; the add-on shows sentences."""
    return text[:1].upper() + text[1:]
