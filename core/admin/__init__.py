"""What the operator's admin commands ask a broker (issue 19): plain
functions over the broker core and its store, no gRPC inside.

- `reads`: how each group's last pull of each queue was answered here;
- `groups`: per (group, topic, queue) offsets, lag, members and that answer;
- `reset`: the plan of an offset reset, and carrying it out through the log;
- `lookup`: a message by its physical offset, and by key in a bounded scan.

`core/broker/admin_service.py` is their gRPC adapter; the cluster-wide view
(every broker merged, who serves each queue and why) is the client's,
`consumer/admin_view.py`.
"""
