"""Import every family module so that each registers its spec family."""
