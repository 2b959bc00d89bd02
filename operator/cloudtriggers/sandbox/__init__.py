"""In-process HTTP emulators of the cloud provider APIs, for tests and demos."""
