from collections.abc import Iterator, Mapping
from typing import Any


class AttributeView(Mapping):
    """Read-only attributes by attribute or by key; a missing one reads as None.

    Subject and HTML functions get users and events as these: `user.name`, `event["resetLink"]`.
    """

    def __init__(self, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._values.get(name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("attributes are read-only here")

    def __getitem__(self, key: str) -> Any:
        return self._values.get(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"AttributeView({self._values!r})"


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
