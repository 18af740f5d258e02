"""Import every family module so that each registers its spec family."""

from . import axbxp, exact, lutna, roup, table, variants  # noqa: F401
