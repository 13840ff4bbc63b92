"""Prompts are versioned data: an id, a version and a hash of what was actually sent."""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from threshold.errors import ConfigError
from threshold.ids import digest
from threshold.models._protocol import Message


@dataclass(frozen=True, slots=True)
class Prompt:
    """A system text and a user template with ``{name}`` placeholders filled from inputs."""

    id: str
    version: str
    template: str
    system: str = "You answer with one JSON object that matches the given schema."
    hash: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hash", digest(self.system + "\x00" + self.template)[:16])

    @property
    def fields(self) -> set[str]:
        return {name for _, name, _, _ in string.Formatter().parse(self.template) if name}

    def render(self, inputs: Mapping[str, Any], feedback: tuple[str, ...] = ()) -> tuple[
        Message, ...
    ]:
        missing = sorted(self.fields - set(inputs))
        if missing:
            raise ConfigError(f"prompt {self.id}@{self.version} needs inputs {missing}")
        messages = [Message("system", self.system), Message("user", self.template.format_map(
            inputs))]
        if feedback:
            # Verifier feedback goes back as a user turn; transport errors never do.
            messages.append(Message("user", "Your previous answer was rejected:\n" + "\n".join(
                feedback) + "\nAnswer again with a corrected JSON object."))
        return tuple(messages)
