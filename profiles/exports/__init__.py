"""Output formats of the domain core: CRM CSV and hashed ad audiences."""
