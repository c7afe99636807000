"""Read many objects at once, in the order they lie in their pack files.

dulwich's `Pack.get_raw` answers one object at a time: an index search, a lookup in its own
locked cache, and a zlib stream fed in 64 KiB slices (each zlib call gives up the GIL, and with
writer threads running it waits long to get it back). A checkout wants thousands of objects in
no particular order. Here they are sorted by their place in each pack and each is inflated with
one zlib call over its own bytes (it ends before the next wanted object starts); the objects
just made stay in a small cache, since a delta's base lies before it in the pack (an
OFS_DELTA's always, a REF_DELTA's nearly always) and was most likely read a moment ago.
dulwich still finds each object in the pack index, parses its header and applies its delta.
"""

from __future__ import annotations

import mmap
import os
from collections import OrderedDict
from typing import Callable, Iterable, Iterator

from dulwich.objects import hex_to_sha, sha_to_hex
from dulwich.pack import OFS_DELTA, REF_DELTA, apply_delta, unpack_object_at

BASE_READ_BYTES = 1 << 14  # zlib's input slices for an object whose end is not known (a base)
LARGEST_READ_BYTES = 1 << 20  # ... and at most this much in one slice for any object
MAX_DELTA_CHAIN = 10000  # git's own packs stay below 4096 (pack.depth's limit)


class DeltaChainError(ValueError):
    """A pack whose deltas do not lead to a whole object (a cycle, or no end)."""


def in_pack_order(store, hex_shas: Iterable[bytes], cache_bytes: int,
                  replacements: dict[bytes, bytes] | None = None) -> Iterator[tuple[bytes, int, bytes]]:
    """(id, type number, contents) of each object of `hex_shas` (hex ids, each once), those in
    the store's packs first, in pack order; the others (loose, in an alternate's store) after,
    from `store.get_raw`. An id with a replacement (`git replace`) reads as its replacement."""
    packs = list(store.packs) if hasattr(store, "pack_dir") else []  # on disk
    located: list[list[tuple[int, bytes]]] = [[] for _ in packs]
    elsewhere = []
    for hex_sha in hex_shas:
        binary = hex_to_sha(replacements.get(hex_sha, hex_sha) if replacements else hex_sha)
        for position, pack in enumerate(packs):
            try:
                located[position].append((pack.index.object_offset(binary), hex_sha))
                break
            except KeyError:
                continue
        else:
            elsewhere.append(hex_sha)
    for pack, wanted in zip(packs, located):
        if wanted:
            yield from _PackReader(store, pack, cache_bytes).read(sorted(wanted))
    for hex_sha in elsewhere:
        yield (hex_sha, *store.get_raw(replacements.get(hex_sha, hex_sha) if replacements else hex_sha))


class _PackReader:
    """One pack, mapped read-only, and the objects lately made from it (by offset)."""

    def __init__(self, store, pack, cache_bytes: int) -> None:
        self._store, self._index = store, pack.index
        self._hash_func: Callable = pack.object_format.hash_func
        self._filename = os.path.join(store.pack_dir, pack.data.filename)  # filename: the base name
        self._cache: OrderedDict[int, tuple[int, bytes]] = OrderedDict()
        self._cached_bytes, self._cache_limit = 0, cache_bytes

    def read(self, wanted: list[tuple[int, bytes]]) -> Iterator[tuple[bytes, int, bytes]]:
        """`wanted`: (offset, id) sorted by offset."""
        with open(self._filename, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as contents:
            self._contents = contents
            try:
                ends = [offset for offset, _ in wanted[1:]] + [len(contents)]
                for (offset, hex_sha), end in zip(wanted, ends):
                    yield (hex_sha, *self._resolve(offset, end - offset))
            finally:
                self._contents = None
                self._cache.clear()

    def _resolve(self, offset: int, span: int) -> tuple[int, bytes]:
        """The object at `offset`, its delta chain followed down to a whole object (or one in
        the cache) and applied back up. `span`: the bytes from `offset` to the next object
        that is wanted (none of them belong to another)."""
        chain: list[tuple[int, bytes]] = []
        while True:
            hit = self._cache.get(offset)
            if hit is not None:
                self._cache.move_to_end(offset)
                type_num, data = hit
                break
            unpacked, _ = unpack_object_at(self._contents, offset, self._hash_func,
                                           zlib_bufsize=max(1, min(span, LARGEST_READ_BYTES)))
            chunks = unpacked.decomp_chunks
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            kind = unpacked.pack_type_num
            if kind not in (OFS_DELTA, REF_DELTA):
                type_num = kind
                self._remember(offset, type_num, data)
                break
            chain.append((offset, data))
            if len(chain) > MAX_DELTA_CHAIN:
                raise DeltaChainError(f"delta chain longer than {MAX_DELTA_CHAIN} at offset {offset}")
            span = BASE_READ_BYTES
            if kind == OFS_DELTA:
                offset -= unpacked.delta_base
                continue
            try:
                base = self._index.object_offset(unpacked.delta_base)
            except KeyError:  # a thin pack's base, in another pack or loose
                type_num, data = self._store.get_raw(sha_to_hex(unpacked.delta_base))
                break
            if any(base == earlier for earlier, _ in chain):
                raise DeltaChainError(f"delta cycle at offset {base}")
            offset = base
        for delta_offset, delta in reversed(chain):
            data = b"".join(apply_delta(data, delta))
            self._remember(delta_offset, type_num, data)
        return type_num, data

    def _remember(self, offset: int, type_num: int, data: bytes) -> None:
        if len(data) > self._cache_limit:
            return
        self._cache[offset] = (type_num, data)
        self._cached_bytes += len(data)
        while self._cached_bytes > self._cache_limit:
            _, (_, old) = self._cache.popitem(last=False)
            self._cached_bytes -= len(old)
