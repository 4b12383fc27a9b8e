"""A tiny name -> class registry, one per component family."""

from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a config ``type`` string to a class that must inherit ``base``."""

    def __init__(self, family: str, base: type[T]):
        self.family = family
        self.base = base
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str):
        def decorator(cls: type[T]) -> type[T]:
            if not issubclass(cls, self.base):
                raise TypeError(f"{cls.__name__} must inherit {self.base.__name__} to be a {self.family}")
            if name in self._classes:
                raise ValueError(f"{self.family} '{name}' is already registered")
            self._classes[name] = cls
            return cls

        return decorator

    def get(self, name: str) -> type[T]:
        if name not in self._classes:
            raise KeyError(f"unknown {self.family} type '{name}'; known: {', '.join(sorted(self._classes))}")
        return self._classes[name]

    def names(self) -> list[str]:
        return sorted(self._classes)
