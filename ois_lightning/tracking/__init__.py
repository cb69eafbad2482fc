"""Where runs are logged: every W&B call (no Lightning), the CSV log of `ois eval`, the images they show."""
