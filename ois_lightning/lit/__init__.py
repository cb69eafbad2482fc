"""Lightning wrappers (the only place Lightning is imported): LightningModule, DataModule, trainer glue."""
