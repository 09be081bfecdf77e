"""The provider registry: every public module of this package is one provider, and every other module asks it.

Each adapter module (`pixazo.py`, `runware.py`, …) is pure: (headers, raw body) in, normalized
`Completion`s out, and the requests we send (`build_submit`/`parse_submit`, `build_poll`/`parse_poll`).
No I/O here. It ends with its record, `PROVIDER = Provider(...)` (receiver/providers/_record.py), naming
its functions; this package finds the modules, so adding a provider is adding its module. Modules whose
name starts with `_` are shared helpers, not providers.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable

from receiver.providers._record import Provider, RegistryError


def discover(path: Iterable[str], package: str) -> dict[str, Provider]:
    """The `PROVIDER` of each public module of `package` (found on `path`), in listing order;
    RegistryError names the first module that has none or whose record contradicts itself."""
    records: list[Provider] = []
    for found in pkgutil.iter_modules(path):
        if found.name.startswith("_"):
            continue
        where = f"{package}.{found.name}"
        record = getattr(importlib.import_module(where), "PROVIDER", None)
        if not isinstance(record, Provider):
            raise RegistryError(f"{where} has no PROVIDER record (a receiver.providers.Provider)")
        if record.name != found.name:
            raise RegistryError(f"{where}'s PROVIDER is named {record.name!r}: a provider is named as its module")
        if problems := record.problems():
            raise RegistryError(f"{where}'s PROVIDER: {'; '.join(problems)}")
        records.append(record)
    if not records:
        raise RegistryError(f"no provider module found in {package}")
    return {p.name: p for p in sorted(records, key=lambda p: (p.order, p.name))}


REGISTRY: dict[str, Provider] = discover(__path__, __name__)

PROVIDER_NAMES: tuple[str, ...] = tuple(REGISTRY)  # in the order people see them listed
WEBHOOK_PROVIDERS: tuple[str, ...] = tuple(p.name for p in REGISTRY.values() if p.webhooks)
POLLING_PROVIDERS: tuple[str, ...] = tuple(p.name for p in REGISTRY.values() if p.polls)

__all__ = ["POLLING_PROVIDERS", "PROVIDER_NAMES", "REGISTRY", "WEBHOOK_PROVIDERS", "Provider", "RegistryError"]
