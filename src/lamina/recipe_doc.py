"""The recipe reference, generated from the pydantic models (so it cannot drift from them)."""

from __future__ import annotations

import types
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(repr(a).replace("'", "`") for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    for arg in typing.get_args(annotation):
        found.extend(_models_in(arg))
    return found


def _default(field) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(computed)"
        return "(section)" if isinstance(value, BaseModel) else f"`{value!r}`"
    if field.default is PydanticUndefined:
        return "**required**"
    if isinstance(field.default, BaseModel):
        return "(section)"
    return f"`{field.default!r}`"


def reference(model: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """Markdown table rows: key | type | default | meaning — one per leaf key, sections expanded."""
    from lamina.recipe import Recipe

    model = model or Recipe
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        subs = _models_in(field.annotation)
        if subs and len(subs) == 1:
            rows.extend(reference(subs[0], f"{key}."))
            continue
        if subs:  # a tagged union (method): one block per variant
            for sub in subs:
                tag = sub.model_fields.get("name")
                label = f"{key}[name={tag.default}]" if tag else key
                rows.extend(reference(sub, f"{label}."))
            continue
        rows.append(f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | {field.description or ''} |")
    return rows


def markdown() -> str:
    from lamina.recipe import PATH_RULE

    head = f"**Paths.** {PATH_RULE}\n\n| key | type | default | meaning |\n|---|---|---|---|\n"
    return head + "\n".join(reference()) + "\n"


START, END = "<!-- recipe-reference:start -->", "<!-- recipe-reference:end -->"


def splice(readme: str) -> str:
    """The README text with the table between the markers replaced by the current reference."""
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{markdown()}{END}{tail}"


if __name__ == "__main__":
    import pathlib
    import sys

    path = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    path.write_text(splice(path.read_text()))
