"""``ScriptedModel``: fixed answers for tests, the fake that ships beside the real thing."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from threshold.models._protocol import Completion, ModelRequest, ModelSpec

Answer = str | bytes | Completion | BaseException
Script = Sequence[Answer] | Callable[[ModelRequest], Answer]


class ScriptedModel:
    """Serves answers in order (or from a function of the request); raises exceptions given
    as answers. Records every request it received in ``requests``."""

    def __init__(self, script: Script, *, name: str = "scripted", version: str = "1",
                 repeat_last: bool = True) -> None:
        self._script = script
        self._spec = ModelSpec("scripted", name, version)
        self._repeat_last = repeat_last
        self.requests: list[ModelRequest] = []

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    async def complete(self, request: ModelRequest) -> Completion:
        self.requests.append(request)
        if callable(self._script):
            answer = self._script(request)
        else:
            index = len(self.requests) - 1
            if index >= len(self._script):
                if not self._repeat_last or not self._script:
                    raise IndexError(f"scripted model ran out of answers after {index}")
                index = len(self._script) - 1
            answer = self._script[index]
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, Completion):
            return answer
        return Completion(text=answer, served_model=self._spec.id, finish_reason="stop",
                          tokens_out=len(answer) // 4)
