"""The first-party `declared` provider: preference-centre answers as declared signals."""
