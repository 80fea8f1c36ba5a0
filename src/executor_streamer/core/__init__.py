"""The hub core: streams, publishing, filters, history, subscriptions, analytics.

Nothing here knows of HTTP, ASGI or sockets; transports are thin layers over it.
"""
