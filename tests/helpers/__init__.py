"""What many tests share: the daemon harness, the callback sink, fakes."""
