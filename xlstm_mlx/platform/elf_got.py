"""Find and rewrite the GOT slots through which a loaded shared object calls imported functions.

Used by `platform/blas.py` to point MLX's BLAS/LAPACK imports at a fast library after `libmlx.so` was loaded.
Pure stdlib + numpy, ELF64 little-endian only (x86_64, aarch64 Linux).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import re
import struct
from dataclasses import dataclass

import numpy as np
from xlstm_mlx.errors import UsageError

_SHT_RELA, _SHT_DYNSYM = 4, 11
_PT_GNU_RELRO = 0x6474E552
# (GLOB_DAT, JUMP_SLOT) relocation types per machine.
_SLOT_TYPES = {62: (6, 7), 183: (1025, 1026)}  # EM_X86_64, EM_AARCH64
_RTLD_DI_LINKMAP = 2


@dataclass
class ElfImports:
    slots: dict[str, list[int]]  # symbol name -> offsets (from load base) of its GOT slots
    relro: list[tuple[int, int]]  # [start, end) offsets that are read-only after relocation


def read_imports(path: str, pattern: str) -> ElfImports:
    """GOT slots of the undefined dynamic symbols of `path` whose names fully match `pattern`."""
    rx = re.compile(pattern)
    with open(path, "rb") as f:
        def read(offset: int, size: int) -> bytes:
            f.seek(offset)
            return f.read(size)

        head = read(0, 64)
        if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            raise UsageError(f"{path}: not a little-endian ELF64 file")
        (_, _, machine, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize, shnum, _) = struct.unpack(
            "<16sHHIQQQIHHHHHH", head)
        if machine not in _SLOT_TYPES:
            raise UsageError(f"{path}: unsupported ELF machine {machine}")
        relro = []
        phdrs = read(phoff, phnum * phentsize)
        for i in range(phnum):
            p_type, _, _, vaddr, _, _, memsz, _ = struct.unpack_from("<IIQQQQQQ", phdrs, i * phentsize)
            if p_type == _PT_GNU_RELRO:
                relro.append((vaddr, vaddr + memsz))
        shdrs = read(shoff, shnum * shentsize)
        sections = [struct.unpack_from("<IIQQQQIIQQ", shdrs, i * shentsize) for i in range(shnum)]
        dynsym_idx = next(i for i, s in enumerate(sections) if s[1] == _SHT_DYNSYM)
        _, _, _, _, sym_off, sym_size, strtab_idx, _, _, _ = sections[dynsym_idx]
        strtab = read(sections[strtab_idx][4], sections[strtab_idx][5])
        syms = np.frombuffer(read(sym_off, sym_size), dtype=np.dtype(
            [("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"), ("value", "<u8"),
             ("size", "<u8")]))
        slot_types = np.array(_SLOT_TYPES[machine], dtype=np.uint64)
        slots: dict[str, list[int]] = {}
        names: dict[int, str | None] = {}
        for s in sections:
            if s[1] != _SHT_RELA or s[6] != dynsym_idx:
                continue
            rela = np.frombuffer(read(s[4], s[5]), dtype="<u8").reshape(-1, 3)
            keep = np.isin(rela[:, 1] & np.uint64(0xFFFFFFFF), slot_types)
            for offset, info in rela[keep, :2].tolist():
                idx = info >> 32
                if idx not in names:
                    name = None
                    if syms[idx]["shndx"] == 0:  # undefined here: imported
                        start = int(syms[idx]["name"])
                        name = strtab[start:strtab.index(b"\0", start)].decode()
                        name = name if rx.fullmatch(name) else None
                    names[idx] = name
                if names[idx] is not None:
                    slots.setdefault(names[idx], []).append(offset)
    return ElfImports(slots=slots, relro=relro)


def load_base(path: str) -> int:
    """Load address of the already-loaded shared object `path` (raises OSError if it is not loaded)."""
    handle = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)._handle
    libc = ctypes.CDLL(None)
    lm = ctypes.c_void_p()
    if libc.dlinfo(ctypes.c_void_p(handle), _RTLD_DI_LINKMAP, ctypes.byref(lm)) != 0:
        raise OSError(f"dlinfo failed for {path}")
    return ctypes.c_size_t.from_address(lm.value).value  # link_map.l_addr


def write_slots(base: int, imports: ElfImports, targets: dict[str, int]) -> dict[int, int]:
    """Point every slot of each name in `targets` at the given address. Returns {slot address: old value}."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = mmap.PAGESIZE
    old: dict[int, int] = {}
    for name, addr in targets.items():
        for off in imports.slots.get(name, []):
            slot = base + off
            ro = any(a <= off < b for a, b in imports.relro)
            if ro:
                start = slot & ~(page - 1)
                if libc.mprotect(start, page, mmap.PROT_READ | mmap.PROT_WRITE) != 0:
                    raise OSError(ctypes.get_errno(), f"mprotect failed for GOT slot of {name}")
            cell = ctypes.c_size_t.from_address(slot)
            old[slot] = cell.value
            cell.value = addr
            if ro:
                libc.mprotect(start, page, mmap.PROT_READ)
    return old


def restore_slots(old: dict[int, int], imports: ElfImports, base: int) -> None:
    """Undo `write_slots`."""
    libc = ctypes.CDLL(None)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = mmap.PAGESIZE
    for slot, value in old.items():
        ro = any(a <= slot - base < b for a, b in imports.relro)
        start = slot & ~(page - 1)
        if ro:
            libc.mprotect(start, page, mmap.PROT_READ | mmap.PROT_WRITE)
        ctypes.c_size_t.from_address(slot).value = value
        if ro:
            libc.mprotect(start, page, mmap.PROT_READ)
