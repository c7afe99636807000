"""devcontainer.json as the reference implementation reads it: the file (parser), its features,
the image's metadata, Compose-based configurations, the user's environment and uid."""
