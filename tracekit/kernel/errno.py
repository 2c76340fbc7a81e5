"""The errno values the model returns, negated as the kernel returns them."""

ENOENT = 2
ENOMEM = 12
EBUSY = 16
EINVAL = 22
ECONNREFUSED = 111

ERRNO_NAMES = {ENOENT: "ENOENT", ENOMEM: "ENOMEM", EBUSY: "EBUSY", EINVAL: "EINVAL",
               ECONNREFUSED: "ECONNREFUSED"}


def strerror(ret: int) -> str:
    """`-16` -> `-EBUSY`; `0` -> `0`."""
    if ret >= 0:
        return str(ret)
    return "-" + ERRNO_NAMES.get(-ret, str(-ret))
