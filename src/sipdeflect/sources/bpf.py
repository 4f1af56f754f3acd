# A classic BPF program (SO_ATTACH_FILTER) that keeps only UDP/TCP packets to or from the
# given ports on Ethernet-framed links (ethernet, veth, and lo, which carries a zero
# Ethernet header), IPv4 (first fragments) and IPv6 (no extension headers): the kernel
# drops everything else before it is copied to us. Hand-assembled because tcpdump (and
# its -dd compiler) is not a dependency; bpf_asm-style comments give each instruction.
from __future__ import annotations

import struct

# opcodes (linux/filter.h)
LDH_ABS, LDB_ABS = 0x28, 0x30
LDH_IND = 0x48
LDX_MSH = 0xB1  # X = 4 * ([k] & 0xf)
JEQ_K, JSET_K = 0x15, 0x45
RET_K = 0x06

Insn = tuple[int, int, int, int]  # code, jt, jf, k


def port_filter(ports: list[int], snaplen: int = 65535) -> list[Insn]:
    """Instructions accepting UDP/TCP packets whose source or destination port is listed."""
    n = len(ports)
    if not 0 < n <= 60:
        raise ValueError("1 to 60 ports")
    # Port checks: ld port; jeq p1..pn -> accept. Each block is 1 + n instructions.
    prog: list[Insn] = []
    accept_drop: list[int] = []  # indexes of jumps to patch: (insn index)

    def port_block(load: Insn) -> None:
        prog.append(load)
        for p in ports:
            prog.append((JEQ_K, 0xFF, 0, p))  # jt patched to accept
            accept_drop.append(len(prog) - 1)

    prog.append((LDH_ABS, 0, 0, 12))  # 0: ethertype
    prog.append((JEQ_K, 0, 0xFE, 0x0800))  # 1: IPv4? else go to v6 check (patched)
    v6_jump = 1
    # IPv4
    prog.append((LDB_ABS, 0, 0, 23))  # protocol
    prog.append((JEQ_K, 1, 0, 17))  # udp -> skip next
    prog.append((JEQ_K, 0, 0xFD, 6))  # tcp else drop (patched)
    drops = [len(prog) - 1]
    prog.append((LDH_ABS, 0, 0, 20))  # flags + fragment offset
    prog.append((JSET_K, 0xFD, 0, 0x1FFF))  # a later fragment -> drop (patched jt)
    drops_jt = [len(prog) - 1]
    prog.append((LDX_MSH, 0, 0, 14))  # X = IPv4 header length
    port_block((LDH_IND, 0, 0, 14))  # source port
    port_block((LDH_IND, 0, 0, 16))  # destination port
    prog.append((RET_K, 0, 0, 0))  # no port matched
    v6_start = len(prog)
    prog.append((JEQ_K, 0, 0xFD, 0x86DD))  # IPv6? (A still holds the ethertype)
    drops.append(len(prog) - 1)
    prog.append((LDB_ABS, 0, 0, 20))  # next header
    prog.append((JEQ_K, 1, 0, 17))
    prog.append((JEQ_K, 0, 0xFD, 6))
    drops.append(len(prog) - 1)
    port_block((LDH_ABS, 0, 0, 54))
    port_block((LDH_ABS, 0, 0, 56))
    drop = len(prog)
    prog.append((RET_K, 0, 0, 0))
    accept = len(prog)
    prog.append((RET_K, 0, 0, snaplen))

    def rel(i: int, target: int) -> int:
        off = target - i - 1
        if not 0 <= off < 256:
            raise ValueError("jump out of range")
        return off

    code, _, jf, k = prog[v6_jump]
    prog[v6_jump] = (code, 0, rel(v6_jump, v6_start), k)
    for i in drops:
        code, jt, _, k = prog[i]
        prog[i] = (code, jt, rel(i, drop), k)
    for i in drops_jt:
        code, _, jf, k = prog[i]
        prog[i] = (code, rel(i, drop), jf, k)
    for i in accept_drop:
        code, _, jf, k = prog[i]
        prog[i] = (code, rel(i, accept), jf, k)
    return prog


def pack(prog: list[Insn]) -> bytes:
    """struct sock_filter[] bytes."""
    return b"".join(struct.pack("HBBI", c, jt, jf, k) for c, jt, jf, k in prog)
