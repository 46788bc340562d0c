"""The run store's Lua scripts: one `.lua` file each in `lua/`, loaded once per client.

Every script is sent with `lua/lib.lua` before it (the helpers they share: fencing, ending
a run, retention; and before that `lua/json_mask.lua`, the masking of its run summaries, and
`lua/run_index.lua`, the run index that lib keeps as runs end and reopen),
so each stays one atomic call. Redis caches a script by its digest;
redis-py loads it again by itself after a restart empties that cache (NOSCRIPT).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any, Final

import redis

from app.store.keys import EVENT_STREAM_LENGTH, PREFIX
from app.store.metric_fields import with_lua_constants

NAMES: Final = (
    "add_run_output", "claim_step", "complete_step", "create_run", "define_branches",
    "end_run", "expire_step", "fail_step", "index_runs", "park", "publish_cancelled", "record_step",
    "reopen", "reopen_parent", "retry_run", "retry_step", "switch_status", "terminate",
    "time_out_step", "trim_index", "write_hash",
)


@cache
def source(name: str) -> str:
    """The text of a script as Redis runs it: the shared helpers, then the script."""
    folder = resources.files("app.store") / "lua"
    lib = (folder / "lib.lua").read_text().replace("__PREFIX__", PREFIX).replace(
        "__EVENT_STREAM_LENGTH__", str(EVENT_STREAM_LENGTH))
    lib = with_lua_constants(lib)  # its metrics block's names and numbers
    masking = (folder / "json_mask.lua").read_text()  # used by lib's status summaries
    # the run index, which lib's ends and reopenings keep (app.store.index reads it)
    index = (folder / "run_index.lua").read_text().replace("__PREFIX__", PREFIX)
    return "\n".join((masking, index, lib, (folder / f"{name}.lua").read_text()))


class Scripts:
    """Every script of the store, registered on one client."""

    def __init__(self, client: redis.Redis) -> None:
        self._registered = {name: client.register_script(source(name)) for name in NAMES}

    def __getitem__(self, name: str) -> Any:
        return self._registered[name]
