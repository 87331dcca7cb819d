"""Framework integrations of blasst."""
