"""Command-line flags generated from a settings dataclass: each setting is declared once, with its help.

Every field is a flag unless its metadata says ``"flag": False``; a flag's type is str, int, float or bool
(or one of them | None), and a field of any other type without ``"flag": False`` is a TypeError. The flag
is the field's name with dashes (``score_threshold`` -> ``--score-threshold``); a bool that defaults to
False is a switch (``--align``), one that defaults to True turns off with ``--no-`` (``--no-flip-tta``: its
help says what turning it off does). The help is ``metadata["help"]``, the choices ``metadata["choices"]``,
the default the field's own: a ``default_factory`` is called when the parser is built, so defaults read from
the environment show in --help.

    parser = argparse.ArgumentParser()
    add_flags(parser, AppSettings, "what the app serves and how")
    settings = from_flags(AppSettings, parser.parse_args())

Standard library only: building a parser here costs no heavy import.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing

FLAG_TYPES = (str, int, float, bool)


def flag_type(annotation: object) -> type | None:
    """str, int, float or bool for a field of that type or that type | None; None for anything else."""
    if annotation in FLAG_TYPES:
        return annotation  # type: ignore[return-value]
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        kinds = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(kinds) == 1 and kinds[0] in FLAG_TYPES:
            return kinds[0]
    return None


def flag_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of dataclass `cls` that are flags: all but those whose metadata says ``"flag": False``."""
    return [field for field in dataclasses.fields(cls) if field.metadata.get("flag", True)]


def field_flag_type(cls: type, field: dataclasses.Field) -> type:
    kind = flag_type(typing.get_type_hints(cls)[field.name])
    if kind is None:
        raise TypeError(f"{cls.__name__}.{field.name}: no flag for type {field.type}; "
                        'give it metadata={"flag": False} to keep it off the command line')
    return kind


def flag_name(field: dataclasses.Field) -> str:
    """--score-threshold for score_threshold; --no-flip-tta for a bool that defaults to True."""
    name = field.name.replace("_", "-")
    return f"--no-{name}" if field.default is True else f"--{name}"


def field_default(field: dataclasses.Field) -> object:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def with_default(text: str, default: object) -> str:
    """The help with its default, unless the help already says it (or what unset means)."""
    return text if default is None or "default" in text else f"{text} (default: %(default)s)"


def add_flags(parser: argparse.ArgumentParser, cls: type, title: str | None = None, *,
              skip: tuple[str, ...] = ()) -> None:
    """Add a flag for each command-line field of dataclass `cls` (less `skip`), in an argument group
    called `title` if given."""
    group = parser.add_argument_group(title) if title else parser
    for field in flag_fields(cls):
        if field.name in skip:
            continue
        kind = field_flag_type(cls, field)
        default, text = field_default(field), field.metadata.get("help", "")
        if kind is bool:
            action = "store_false" if default is True else "store_true"
            group.add_argument(flag_name(field), dest=field.name, action=action, default=default, help=text)
        else:
            group.add_argument(flag_name(field), dest=field.name, type=kind, default=default,
                               choices=field.metadata.get("choices"), help=with_default(text, default),
                               metavar=field.name.upper() if field.metadata.get("choices") is None else None)


def from_flags(cls: type, args: argparse.Namespace, **overrides: object):
    """An instance of `cls` from the parsed flags of its fields (fields without a flag keep their
    defaults), with `overrides` on top."""
    values = {field.name: getattr(args, field.name) for field in flag_fields(cls) if hasattr(args, field.name)}
    return cls(**{**values, **overrides})
