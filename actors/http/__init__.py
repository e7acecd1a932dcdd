"""The actors' HTTP/1.1 client: strict framing, one connection, a keep-alive pool."""
