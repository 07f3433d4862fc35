"""Model builders; importing a builder module registers its custom layers."""
