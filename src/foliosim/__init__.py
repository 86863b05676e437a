"""foliosim: a reference model of Linux v6.15 large-folio mapcounts and MM owner tracking."""

__version__ = "0.1.0"
