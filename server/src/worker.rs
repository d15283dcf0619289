//! One thread = one ring (or a few) + one listener + one slab of connections.
