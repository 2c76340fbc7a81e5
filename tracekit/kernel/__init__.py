"""A faithful, pure-Python model of Linux `net/core/sock_reuseport.c` and the socket code around it.

`structs` holds the structs the modules share (as the kernel's headers do) and sits below them all;
`sock_reuseport` mirrors the C file function by function; `profiles` names what differs between
kernel releases; `bpf` and `cbpf` run the programs a group may carry; `socket_layer` lowers TCP and
UDP socket operations onto the reuseport functions as the kernel's callers do.
"""
