# Each kernel of one or more cubins (ELF files nvcc -cubin writes) with a hash of its machine code (its .text
# section's bytes), one line each: "HASH NAME" (the name demangled by c++filt where there is one), sorted by name.
#   python3 scripts/cubin_kernels.py FILE.cubin [FILE.cubin ...]
# scripts/same-kernels.sh compares two such lists: a refactor that should leave the kernels alone must leave every
# hash it kept in place.
import hashlib
import shutil
import struct
import subprocess
import sys


def text_sections(path):
    """{section name: bytes} of an ELF64 little-endian file's .text.* sections."""
    b = open(path, "rb").read()
    if b[:4] != b"\x7fELF" or b[4] != 2:
        raise SystemExit(f"cubin_kernels: {path} is not an ELF64 file")
    shoff = struct.unpack_from("<Q", b, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", b, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", b, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]

    def name(off):
        end = b.index(b"\0", names_at + off)
        return b[names_at + off:end].decode()

    # (name offset, type, flags, addr, offset, size, ...)
    return {name(h[0]): b[h[4]:h[4] + h[5]] for h in headers if name(h[0]).startswith(".text.")}


def main(paths):
    kernels = {}
    for path in paths:
        for section, code in text_sections(path).items():
            kernels[section[len(".text."):]] = hashlib.sha1(code).hexdigest()[:16]
    names = sorted(kernels)
    shown = names
    if shutil.which("c++filt"):
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
        if len(out) == len(names):
            shown = out
    for mangled, readable in sorted(zip(names, shown), key=lambda p: p[1]):
        print(kernels[mangled], readable)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: python3 scripts/cubin_kernels.py FILE.cubin [FILE.cubin ...]")
    main(sys.argv[1:])
