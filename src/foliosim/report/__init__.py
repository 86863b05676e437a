"""Human-facing renderings: terminal pictures, tables, plots, HTML."""
