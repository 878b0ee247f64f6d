"""taskmill's actors, each a ``bus.runtime.Actor`` with its pure handlers beside it.

Actors import only ``bus`` (never ``taskmill``): the public package is a client of them.
"""
