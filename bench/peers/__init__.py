"""Peer servers that speak enough of the realtime protocol for the load generator.

Each is a small standalone program fed by its natural backend: ``floor`` (raw sockets, one
pre-built frame per event), ``naive_tornado`` (a handler set per channel), ``channels_peer``
(Django Channels 4 + channels_redis) and ``socketio_peer`` (python-socketio + its Redis
manager).
"""
