"""Who owns a bucket: exactly one process sends for a bucket's numbers at a time.

Ownership comes from something that already knows how to decide it, never from
an election of our own: the kernel's ``flock`` on one host (``flock``), etcd's
leases and transactions across hosts (``etcd``). Both drive a ``BucketHost``
(the daemon: start a gained bucket's actors, drain a lost one's) through the
same ``Ownership`` interface (``interface``).
"""
