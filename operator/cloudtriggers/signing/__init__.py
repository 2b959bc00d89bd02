"""Request signers of the provider APIs: pure functions, checked byte for byte against the official SDKs."""
