"""Attributes by attribute or by key, as flows, subjects and templates read users and events.

`user.name`, `user["name"]` and a missing `user.profileCompleted` (None) all work alike. Plain
Python with no Django inside: the flow engine uses these too.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any


class AttributeView(Mapping):
    """Read-only attributes by attribute or by key; a missing one reads as None.

    Subject and HTML functions get users and events as these: `user.name`, `event["resetLink"]`.
    """

    __slots__ = ("_attributes",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_attributes", dict(values))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._attributes.get(name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("attributes are read-only here")

    def __getitem__(self, key: str) -> Any:
        return self._attributes.get(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._attributes)

    def __len__(self) -> int:
        return len(self._attributes)

    def __contains__(self, key: object) -> bool:
        return key in self._attributes

    def get(self, key: str, default: Any = None) -> Any:
        return self._attributes.get(key, default)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._attributes)

    def __repr__(self) -> str:
        return f"AttributeView({self._attributes!r})"


class FlowUser(AttributeView):
    """`ctx.user` in a flow: the user's attributes, which the flow may also assign.

    Assignments change what the flow sees at once and, once the step is stored, the user itself.
    Only assignments made while the flow runs live are kept as writes, not those of a replay.
    """

    __slots__ = ("_id", "_writes", "_live")

    def __init__(self, user_id: str, attributes: Mapping[str, Any]) -> None:
        super().__init__(attributes)
        object.__setattr__(self, "_id", user_id)
        object.__setattr__(self, "_writes", {})
        object.__setattr__(self, "_live", False)

    @property
    def id(self) -> str:
        return self._id

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __setitem__(self, key: str, value: Any) -> None:
        if key == "id":
            raise AttributeError("ctx.user.id is the user's id and cannot be changed")
        self._attributes[key] = value
        if self._live:
            self._writes[key] = value

    def __repr__(self) -> str:
        return f"<user {self._id!r} {self._attributes!r}>"


def user_values(user) -> dict[str, Any]:
    """A user as templates see it: its attributes, and its id."""
    return {**(user.attributes or {}), "id": user.id}


def event_values(event) -> dict[str, Any]:
    """An event as templates see it: its attributes at the top (the seed's `event.resetLink`),
    and its name, id, time and attributes under their own names."""
    attributes = event.attributes or {}
    return {
        **attributes,
        "name": event.name,
        "id": event.id,
        "created_at": event.created_at,
        "attributes": attributes,
    }
