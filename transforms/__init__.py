"""Reusable Beam transforms and the pure functions behind them, one module per stage."""
