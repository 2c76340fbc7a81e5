"""A faithful, pure-Python model of Linux `net/core/sock_reuseport.c` and the socket code around it.

`sock_reuseport` mirrors the C file function by function; `profiles` names what differs between
kernel releases; `bpf` and `cbpf` run the programs a group may carry; `socket_layer` lowers TCP and
UDP socket operations onto the reuseport functions as the kernel's callers do.
"""
