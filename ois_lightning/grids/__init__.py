"""Ablation grids: sweep and table files, the local runner, the table collation, the scorecard."""
