"""The engine's Lua scripts, run with EVALSHA and loaded again on NOSCRIPT by redis-py's
``register_script`` (a Redis restart forgets loaded scripts)."""

from __future__ import annotations

from importlib.resources import files

from redis.commands.core import AsyncScript

from .connect import Client


def _source(name: str) -> str:
    return (files(__package__) / name).read_text()


class Scripts:
    def __init__(self, client: Client) -> None:
        shared = _source("trim.lua")
        self.publish: AsyncScript = client.register_script(shared + _source("publish.lua"))
        self.append: AsyncScript = client.register_script(shared + _source("append.lua"))
        self.keep: AsyncScript = client.register_script(shared + _source("keep.lua"))
        self.connection_caps: AsyncScript = client.register_script(_source("connection_caps.lua"))
