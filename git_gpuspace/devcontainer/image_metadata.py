"""An image's `devcontainer.metadata` label: what the image (and the features installed into it)
ask of a dev container, merged with the devcontainer.json as the reference implementation merges
them (devcontainers/cli imageMetadata.ts: the image's entries first, then each feature's in install
order, then the file's; lifecycle commands collected, the last user and userEnvProbe given win,
environments merged key by key).

Every `mcr.microsoft.com/devcontainers/*` image sets `remoteUser` there, and features add
lifecycle commands. The label is the image's, chosen by whoever chose the image: its users and
environments are applied as the file's would be, its lifecycle commands run only where the
file's would (a trusted devcontainer.json, or an image the user named), and its host options
(privileged, capabilities, mounts) are not taken from it at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .parser import LIFECYCLE

LABEL = "devcontainer.metadata"
MAX_LABEL_BYTES = 1 << 20
# what a feature's devcontainer-feature.json contributes to the label (the reference's pickFeatureProperties)
FEATURE_KEYS = (*LIFECYCLE, "init", "privileged", "capAdd", "securityOpt", "entrypoint",
                "mounts", "customizations")


@dataclass
class Merged:
    lifecycle: dict[str, list[Any]] = field(default_factory=dict)  # LIFECYCLE key -> commands, in order
    remote_user: str | None = None
    container_user: str | None = None
    user_env_probe: str | None = None
    remote_env: dict[str, str | None] = field(default_factory=dict)
    container_env: dict[str, str] = field(default_factory=dict)


def entries_of(labels: dict | None) -> list[dict]:
    """The label's entries: a JSON array of objects, or one object. Anything else is no metadata
    (the reference logs it and goes on)."""
    text = (labels or {}).get(LABEL)
    if not isinstance(text, str) or not text or len(text) > MAX_LABEL_BYTES:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        return []
    entries = value if isinstance(value, list) else [value]
    return [entry for entry in entries if isinstance(entry, dict)]


def feature_entry(key: str, metadata: dict) -> dict:
    """A feature's entry in the label: its id and what it contributes."""
    return {"id": key, **{name: metadata[name] for name in FEATURE_KEYS if name in metadata}}


def label_value(entries: list[dict]) -> str:
    return json.dumps([entry for entry in entries if entry], separators=(",", ":"))


def merge(entries: list[dict]) -> Merged:
    """The entries merged, later ones over earlier (the file's own entry last)."""
    merged = Merged()
    for entry in entries:
        for key in LIFECYCLE:
            if entry.get(key):
                merged.lifecycle.setdefault(key, []).append(entry[key])
        for key, attribute in (("remoteUser", "remote_user"), ("containerUser", "container_user"),
                               ("userEnvProbe", "user_env_probe")):
            if isinstance(entry.get(key), str) and entry[key]:
                setattr(merged, attribute, entry[key])
        for key, target in (("remoteEnv", merged.remote_env), ("containerEnv", merged.container_env)):
            values = entry.get(key)
            if isinstance(values, dict):
                target.update({str(name): _text(value) for name, value in values.items()
                               if key == "remoteEnv" or value is not None})
    return merged


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value) if isinstance(value, bool) else str(value)
